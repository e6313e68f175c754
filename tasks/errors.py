"""The one base class of bad-input errors, at the bottom of the package layers.

Every error that means "what the user gave is wrong" (a config key, a data file, a model path, a
storage URI, hardware the cluster lacks) derives from `BadInput`, whichever package raises it; the
CLI exits with code 2 on it and 1 on anything else. It lives here because `tasks` is the lowest
package that every other one (agents, orchestrator) may import.
"""


class BadInput(Exception):
    """What the user gave cannot work; the message names the key, file or path in one line."""
