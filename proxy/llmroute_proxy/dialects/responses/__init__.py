"""The OpenAI Responses dialect (front-door side only: every provider gets it as canonical chat):
`request_in` (a Responses request → canonical), `answer_out` (canonical answers → Response objects),
`stream_out` (canonical chunks → the semantic events) and `items` (what is listed and refused about
a stored response). Its encoder and error body, which use the sidecar's response store, are in
`server/responses.py`."""
