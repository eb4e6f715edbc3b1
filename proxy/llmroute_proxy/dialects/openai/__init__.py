"""The OpenAI Chat Completions dialect, the canonical form itself: `chat` (request sent on, answers
and streams read back), `errors` (upstream errors classified, client error bodies) and `encoder`
(answers written to an OpenAI client). OpenAI, Azure OpenAI and the compatible servers speak it."""
