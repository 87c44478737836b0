# The module is keyledger_client.events.vocabulary itself (events/__init__.py aliases it).
from keyledger_client.events.vocabulary import *  # noqa: F403
