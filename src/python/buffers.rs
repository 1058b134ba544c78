//! Turning Python byte-like objects into `Bytes` for the core, and back.

use bytes::Bytes;
use pyo3::buffer::PyBuffer;
use pyo3::ffi;
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
/// (`PyBytes::new_with` would first zero the buffer: a wasted pass over every message.)
pub fn to_pybytes<'py>(py: Python<'py>, msg: &Message) -> PyResult<Bound<'py, PyBytes>> {
    let len = ffi::Py_ssize_t::try_from(msg.len())
        .map_err(|_| pyo3::exceptions::PyOverflowError::new_err("message too large"))?;
    // SAFETY: a NULL source asks CPython for an uninitialised bytes object of `len` bytes, which
    // nobody else can see until we return it; we fill all of it before that.
    unsafe {
        let obj = ffi::PyBytes_FromStringAndSize(std::ptr::null(), len);
        let bytes = Bound::from_owned_ptr_or_err(py, obj)?.cast_into_unchecked::<PyBytes>();
        let data = ffi::PyBytes_AsString(bytes.as_ptr()).cast::<u8>();
        msg.copy_to(std::slice::from_raw_parts_mut(data, msg.len()));
        Ok(bytes)
    }
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
