"""keyledger's event contract under the name the service has always imported.

The models, the decoder and the subscriber helper live in ``keyledger_client.events``
(the client distribution, which a subscriber installs without the service). This
package is that one definition under its older name: ``events.models`` *is*
``keyledger_client.events.models``, the same module object, so a ``KeyRevoked`` from
either name is the same class.
"""

from __future__ import annotations

import sys

from keyledger_client import events as _contract
from keyledger_client.events import *  # noqa: F403 (the whole contract, re-exported)
from keyledger_client.events import (
    __all__,  # noqa: F401 (the re-exported names)
    codec,
    models,
    servers,
    subjects,
    subscriber,
    vocabulary,
    webhooks,
)

# ``from events.models import X`` finds these in sys.modules: one module object under two
# names, no second copy of any class.
for _module in (codec, models, servers, subjects, subscriber, vocabulary, webhooks):
    sys.modules[f"{__name__}.{_module.__name__.rpartition('.')[2]}"] = _module
del _contract
