//! The shadow(5) entry of an account, through NSS (`getspnam_r`), for the account gates.
//!
//! Neither nix nor a well-kept crate wraps getspnam, so this is a small unsafe wrapper of
//! libc's reentrant call (thread-safe, unlike getspnam): glibc and musl both have it, and
//! NSS also answers for shadow sources other than /etc/shadow (sssd, LDAP).
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::mem::MaybeUninit;

use nix::errno::Errno;
use nix::libc;

/// First buffer size for the entry's strings; doubled on ERANGE up to [`MAX_BUFFER`].
const FIRST_BUFFER: usize = 1024;
/// Largest buffer tried: an entry is one line of /etc/shadow.
const MAX_BUFFER: usize = 1 << 20;

/// The fields of a shadow entry the gates read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ShadowEntry {
    /// The encrypted password field (`!...` when locked).
    pub(crate) password: Vec<u8>,
    /// Account expiry in days since 1970-01-01; -1 when the field is empty.
    pub(crate) expire_days: i64,
}

/// Looks `name` up. `Ok(None)` when there is no shadow entry.
pub(crate) fn lookup(name: &str) -> Result<Option<ShadowEntry>, Errno> {
    let name = CString::new(name).map_err(|_| Errno::EINVAL)?;
    let mut size = FIRST_BUFFER;
    loop {
        let mut buffer = vec![0 as libc::c_char; size];
        let mut entry = MaybeUninit::<libc::spwd>::zeroed();
        let mut result: *mut libc::spwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call: `name` is NUL-terminated, `entry` is
        // writable storage for one `spwd`, `buffer` is `size` writable bytes, `result` a
        // local. On success `result` is null or points to `entry`, whose string pointers
        // point into `buffer`; both outlive the reads below.
        let rc = unsafe { libc::getspnam_r(name.as_ptr(), entry.as_mut_ptr(), buffer.as_mut_ptr(), size, &mut result) };
        match rc {
            0 if result.is_null() => return Ok(None),
            0 => {
                // SAFETY: getspnam_r succeeded and `result` points to the filled `entry`.
                let entry = unsafe { &*result };
                let password = if entry.sp_pwdp.is_null() {
                    Vec::new()
                } else {
                    // SAFETY: a non-null sp_pwdp is a NUL-terminated string inside `buffer`.
                    unsafe { CStr::from_ptr(entry.sp_pwdp) }.to_bytes().to_vec()
                };
                // c_long is i32 on 32-bit targets.
                #[allow(clippy::useless_conversion)]
                let expire_days = i64::from(entry.sp_expire);
                return Ok(Some(ShadowEntry { password, expire_days }));
            }
            libc::ERANGE if size < MAX_BUFFER => size *= 2,
            libc::ENOENT => return Ok(None),
            rc => return Err(Errno::from_raw(rc)),
        }
    }
}
