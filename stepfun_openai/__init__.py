"""StepFun image generation on the OpenAI Python SDK."""
