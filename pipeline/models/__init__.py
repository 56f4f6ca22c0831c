"""The pipeline's models, one module per concern, re-exported here for Django."""

from .cdn import *  # noqa: F403
from .media import *  # noqa: F403
from .migration import *  # noqa: F403
