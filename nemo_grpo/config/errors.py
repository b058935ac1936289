"""The one exception type for problems in a user's configuration."""

from nemo_grpo.utils.errors import UserError


class ConfigError(UserError, ValueError):
    """A configuration problem the user can fix; the message names the key and what to do."""
