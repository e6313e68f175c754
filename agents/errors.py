"""The agents' error type, in its own module so every agents module can raise it without cycles."""
from tasks.errors import BadInput


class AgentError(BadInput, RuntimeError):
    """A problem with an agent's model, adapters or inputs, stated in one line."""
