"""Client dialects other than OpenAI's: each turns its requests into the canonical OpenAI form
and canonical answers back into its own shape. Pure, like the providers: dicts and bytes only."""
