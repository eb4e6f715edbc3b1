"""The Anthropic Messages dialect: `request_out` (canonical → Messages request) and `answer_in`
(Messages answers and streams → canonical) for the Anthropic provider; `request_in` (a client's
Messages request → canonical), `answer_out` (canonical → Messages answers and events) and `encoder`
for the `/v1/messages` front door; `wire` and `errors` (the tables both sides read)."""
