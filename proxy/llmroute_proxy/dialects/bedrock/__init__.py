"""Amazon Bedrock's Converse API: `request_out` (OpenAI → Converse), `answer_in` (Converse → OpenAI) and
`errors` (Bedrock's exception types, for Converse and for Claude through InvokeModel alike)."""
