//! Extended attributes of a path itself (l*xattr: symlinks are not followed).

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::TestError;

fn c_path(path: &Path) -> Result<CString, TestError> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| TestError::io(path, std::io::Error::from(std::io::ErrorKind::InvalidInput)))
}

fn c_name(path: &Path, name: &str) -> Result<CString, TestError> {
    CString::new(name)
        .map_err(|_| TestError::io(path, std::io::Error::from(std::io::ErrorKind::InvalidInput)))
}

/// Calls a size-probing xattr syscall twice: once for the size, once into a buffer.
fn read_sized(
    path: &Path,
    call: impl Fn(*mut libc::c_void, usize) -> isize,
) -> Result<Option<Vec<u8>>, TestError> {
    loop {
        let size = call(std::ptr::null_mut(), 0);
        if size < 0 {
            let err = std::io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::ENODATA) | Some(libc::ENOTSUP) => Ok(None),
                _ => Err(TestError::io(path, err)),
            };
        }
        let mut buf = vec![0u8; size as usize];
        let got = call(buf.as_mut_ptr().cast(), buf.len());
        if got >= 0 {
            buf.truncate(got as usize);
            return Ok(Some(buf));
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ERANGE) {
            return Err(TestError::io(path, err));
        }
    }
}

/// Every xattr of `path` (all namespaces the caller may read; root sees `trusted.*`).
pub fn list_xattrs(path: &Path) -> Result<BTreeMap<String, Vec<u8>>, TestError> {
    let cpath = c_path(path)?;
    // SAFETY: valid NUL-terminated path; buffer pointer/length pairs come from read_sized.
    let names = read_sized(path, |buf, len| unsafe {
        libc::llistxattr(cpath.as_ptr(), buf.cast(), len)
    })?;
    let mut out = BTreeMap::new();
    for name in names
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
    {
        let name = String::from_utf8_lossy(name).into_owned();
        let cname = c_name(path, &name)?;
        // SAFETY: as above.
        let value = read_sized(path, |buf, len| unsafe {
            libc::lgetxattr(cpath.as_ptr(), cname.as_ptr(), buf, len)
        })?;
        if let Some(value) = value {
            out.insert(name, value);
        }
    }
    Ok(out)
}

pub fn set_xattr(path: &Path, name: &str, value: &[u8]) -> Result<(), TestError> {
    let (cpath, cname) = (c_path(path)?, c_name(path, name)?);
    // SAFETY: valid NUL-terminated strings and a value slice.
    let rc = unsafe {
        libc::lsetxattr(
            cpath.as_ptr(),
            cname.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc != 0 {
        return Err(TestError::io(path, std::io::Error::last_os_error()));
    }
    Ok(())
}

pub fn remove_xattr(path: &Path, name: &str) -> Result<(), TestError> {
    let (cpath, cname) = (c_path(path)?, c_name(path, name)?);
    // SAFETY: valid NUL-terminated strings.
    let rc = unsafe { libc::lremovexattr(cpath.as_ptr(), cname.as_ptr()) };
    if rc != 0 {
        return Err(TestError::io(path, std::io::Error::last_os_error()));
    }
    Ok(())
}
