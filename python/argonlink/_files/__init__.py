"""Files over a link: ``send_file`` / ``recv_file`` and their stream forms.

A small protocol on top of ordinary messages (``send``/``recv``), so it works over any
connection or client. It is written once, as generators that *describe* their I/O (send this,
receive one message, run this blocking file operation) without doing any of it; two thin
drivers carry the descriptions out, one with ``await`` (file operations on a small thread pool of
this package's own, so the event loop never waits for the disk and a transfer never takes a
thread of the loop's default executor) and one blocking. See docs/PROTOCOL.md, "File
transfer", for the wire format.

::

    sender                                receiver
      OFFER {name, size, sha256}  ───────▶  checks the name, finds a partial file to resume
                                  ◀───────  ACCEPT offset          (or REFUSE code, reason)
      DATA offset ‖ bytes          ───────▶  (from the offset on, chunk by chunk)
      ...                                    (a REFUSE may come early: the sender CANCELs)
      END size ‖ sha256            ───────▶  verifies, fsyncs, moves into place
                                  ◀───────  DONE size ‖ sha256     (or REFUSE)

Memory stays bounded: one chunk is read, hashed and sent at a time, and ``send`` waits while
the link's send buffer is full; the receiver writes each chunk as it comes.

The modules, each building only on those above it:

- ``defaults``: the public defaults (chunk size, partial-file suffix, file mode, limits)
- ``wire``: the messages (OFFER ... CANCEL), their encoders and the decoder
- ``names``: ``check_name``, the rule for a safe file name
- ``receipt``: ``Progress``, ``FileReceipt`` and ``DirReceipt``, what a transfer tells its caller
- ``effects``: what the protocol asks its driver to do (send, receive, run, sleep, ...)
- ``source``: reading a file or a stream into DATA messages (the sender's disk)
- ``sink``: the directory sink (partial files, locks, quota, free space, fsync, the move into
  place), the stream sink, ``remove_stale_partials`` (the receiver's disk)
- ``steps``: the protocol itself, the send and the receive steps as generators of effects
- ``runner``: the blocking and the asyncio driver of the steps, and the file thread pool
- ``directory``: ``send_dir`` / ``recv_dir``: the walk, the lanes, the manifest
- ``api``: ``AsyncTransfers`` / ``BlockingTransfers`` and the checks of their arguments

A test that replaces a module attribute patches the submodule that looks it up (for example
``_files.sink._free_bytes``): replacing a name re-exported here changes nothing the code sees.
"""

from __future__ import annotations

from .api import AsyncTransfers, BlockingTransfers, check_mode
from .defaults import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_FILE_MODE,
    DEFAULT_MAX_PARTIAL_BYTES,
    DEFAULT_MAX_PARTIALS,
    DEFAULT_MIN_FREE_SPACE,
    PARTIAL_SUFFIX,
)
from .names import check_name
from .receipt import DirReceipt, FileReceipt, Progress
from .sink import (
    _SPACE_STEP,
    _free_bytes,
    _partial_key,
    _partial_name,
    _try_lock,
    remove_stale_partials,
)
from .source import _Source
from .steps import _LOCK_WAIT
from .wire import encode_refuse, is_file_message, kind_name

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_FILE_MODE",
    "DEFAULT_MAX_PARTIALS",
    "DEFAULT_MAX_PARTIAL_BYTES",
    "DEFAULT_MIN_FREE_SPACE",
    "PARTIAL_SUFFIX",
    "_LOCK_WAIT",
    "_SPACE_STEP",
    "AsyncTransfers",
    "BlockingTransfers",
    "DirReceipt",
    "FileReceipt",
    "Progress",
    "_Source",
    "_free_bytes",
    "_partial_key",
    "_partial_name",
    "_try_lock",
    "check_mode",
    "check_name",
    "encode_refuse",
    "is_file_message",
    "kind_name",
    "remove_stale_partials",
]
