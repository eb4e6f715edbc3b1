"""The API dialects the sidecar speaks, one package each, shared by the provider that sends it
upstream and the front door that takes it from clients: what a request looks like in and out, what
an answer and a stream look like in and out, and what an error body is."""
