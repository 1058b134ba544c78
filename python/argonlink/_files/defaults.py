"""The public defaults of the file transfers: the chunk size, the partial-file suffix, the mode
of received files and the limits of a receiving directory.

Separate because every layer reads them and none owns them: the names refuse the suffix, the
sources and sinks size their buffers by the chunk, the sinks apply the limits and the public
methods take them as keyword defaults.
"""

from __future__ import annotations

from typing import Final

DEFAULT_CHUNK_SIZE: Final = 1 << 20
#: Hidden partial files in the destination directory end with this; peers may not use it.
PARTIAL_SUFFIX: Final = ".argonlink-part"
#: Received files are readable and writable by their owner only, unless ``mode=`` says otherwise.
DEFAULT_FILE_MODE: Final = 0o600
#: At most this many partial files in a directory before a new one is created (docs: §9.5).
DEFAULT_MAX_PARTIALS: Final = 32
#: At most this many bytes in the partial files already in a directory before a new one is made.
DEFAULT_MAX_PARTIAL_BYTES: Final = 64 << 30
#: A receiver refuses (code 4) rather than leave less than this free on the file system.
DEFAULT_MIN_FREE_SPACE: Final = 256 << 20
