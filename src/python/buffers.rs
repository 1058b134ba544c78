//! Turning Python byte-like objects into `Bytes` for the core, and back.

use bytes::Bytes;
use pyo3::buffer::PyBuffer;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use zeroize::Zeroizing;

use crate::core::message::Message;

/// A `bytes` object lent to Rust without copying: immutable, kept alive by the reference.
struct PyBytesOwner {
    _obj: Py<PyBytes>,
    ptr: *const u8,
    len: usize,
}

// SAFETY: `bytes` objects are immutable and their buffer lives as long as the object, which
// `_obj` keeps alive; reading it needs no GIL. Dropping `Py` off-GIL defers the decref.
unsafe impl Send for PyBytesOwner {}
unsafe impl Sync for PyBytesOwner {}

impl AsRef<[u8]> for PyBytesOwner {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: see above; ptr/len were read from the live object.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// `bytes` are shared without a copy; `bytearray`, `memoryview` and other buffers are copied
/// (they could change after `send` returns).
pub fn to_bytes(obj: &Bound<'_, PyAny>) -> PyResult<Bytes> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        let slice = b.as_bytes();
        let owner = PyBytesOwner {
            ptr: slice.as_ptr(),
            len: slice.len(),
            _obj: b.clone().unbind(),
        };
        return Ok(Bytes::from_owner(owner));
    }
    let buf = PyBuffer::<u8>::get(obj).map_err(|_| {
        pyo3::exceptions::PyTypeError::new_err(format!(
            "expected bytes, bytearray or memoryview, got {}",
            obj.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ))
    })?;
    Ok(Bytes::from(buf.to_vec(obj.py())?))
}

/// The one copy of a received message: its decrypted fragments straight into a new `bytes`.
pub fn to_pybytes<'py>(py: Python<'py>, msg: &Message) -> PyResult<Bound<'py, PyBytes>> {
    PyBytes::new_with(py, msg.len(), |buf| {
        msg.copy_to(buf);
        Ok(())
    })
}

/// A password from `str` (UTF-8) or bytes-like, in memory that is wiped when dropped.
pub fn secret_bytes(obj: &Bound<'_, PyAny>) -> PyResult<Zeroizing<Vec<u8>>> {
    if let Ok(s) = obj.extract::<&str>() {
        return Ok(Zeroizing::new(s.as_bytes().to_vec()));
    }
    let buf = PyBuffer::<u8>::get(obj)
        .map_err(|_| pyo3::exceptions::PyTypeError::new_err("a password must be str or bytes"))?;
    Ok(Zeroizing::new(buf.to_vec(obj.py())?))
}
