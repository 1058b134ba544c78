//! pyo3 binding (filled in below).
