"""The OpenAI Responses dialect (front-door side only: every provider gets it as canonical chat):
`request_in` (a Responses request → canonical), `answer_out` (canonical answers → Response objects),
`stream_out` (canonical chunks → the semantic events), `encoder` (the front door's encoder and error
body; finished responses go to a `ResponseKeeper`, the server's store) and `items` (what is listed
and refused about a stored response)."""
