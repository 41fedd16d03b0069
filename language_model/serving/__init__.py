"""The LM server: flags, Redis loop, the original and multi-client protocols, one message handler, the
per-process service."""
