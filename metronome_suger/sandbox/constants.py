"""Fixed values of the bundled sandbox: credentials, ports and the USD credit type.

The credentials are deliberately public: they only open the local emulators.
"""

from __future__ import annotations

from typing import Final

from metronome_suger.clients.metronome_models import USD_CREDIT_TYPE_ID

METRONOME_TOKEN: Final = "sandbox-metronome-token"
SUGER_API_KEY: Final = "sandbox-suger-key"
ORG_ID: Final = "org-sandbox"
DEFAULT_HOST: Final = "127.0.0.1"
METRONOME_PORT: Final = 8701
SUGER_PORT: Final = 8702
USD_CREDIT_TYPE: Final[dict[str, str]] = {
    "id": USD_CREDIT_TYPE_ID,
    "name": "USD (cents)",
}
