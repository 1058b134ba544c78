"""Constants shared by the test modules (the tests directory is on sys.path under pytest)."""

from __future__ import annotations

import argonlink

PASSWORD = "correct horse battery staple"
#: The OWASP floor: the cheapest costs a default client accepts, so tests derive fast.
KDF = argonlink.KdfParams.OWASP
