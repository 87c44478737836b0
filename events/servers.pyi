# The module is keyledger_client.events.servers itself (events/__init__.py aliases it).
from keyledger_client.events.servers import *  # noqa: F403
