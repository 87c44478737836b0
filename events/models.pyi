# The module is keyledger_client.events.models itself (events/__init__.py aliases it).
from keyledger_client.events.models import *  # noqa: F403
