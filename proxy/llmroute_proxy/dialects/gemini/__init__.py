"""The Gemini `generateContent` dialect (provider side only: no client speaks it to the sidecar):
`request_out` (canonical → Gemini request), `answer_in` (answers and streams → canonical) and
`errors` (Google RPC statuses classified)."""
