//! Opening a private file (a key, or state next to it) only when nobody else can read or replace
//! it: the checks OpenSSH makes before it uses a private key, with errors as clear as its
//! "UNPROTECTED PRIVATE KEY FILE".
//!
//! Invariants: the file is opened without following a symbolic link (`O_NOFOLLOW`) and every
//! check is made on the opened file (`fstat`), so a swap between check and read changes nothing.
//! Refused: a symbolic link, anything but a regular file, a file owned by another user than the
//! effective one (root too reads only its own files), a mode giving group or others any access,
//! and a directory on the way that others may write without the sticky bit (they could replace
//! the file).

use std::fs::{self, File};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::OFlags;

/// Why a private file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UnsafeFile {
    /// Group or others have some access.
    #[error(
        "UNPROTECTED PRIVATE KEY FILE: mode {mode:04o} makes it readable by group or others \
         (owner uid {owner}); run `chmod 600 {}`",
        path.display()
    )]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// Its owner.
        owner: u32,
    },
    /// Another user owns it.
    #[error(
        "UNPROTECTED PRIVATE KEY FILE: owned by uid {owner}, but spdu runs as uid {user} \
         (mode {mode:04o}); run `chown {user} {}`",
        path.display()
    )]
    Owner {
        /// The file.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The effective user.
        user: u32,
        /// Its permission bits.
        mode: u32,
    },
    /// A symbolic link: where it points can change behind the operator's back.
    #[error("is a symbolic link; refusing to follow it for a private file (name the file itself)")]
    Symlink,
    /// A directory, a device, a pipe…
    #[error("is not a regular file")]
    NotAFile,
    /// A directory on the way that others may write, without the sticky bit.
    #[error(
        "UNPROTECTED PRIVATE KEY FILE: directory {} (mode {mode:04o}, owner uid {owner}) is writable \
         by others without the sticky bit, so anyone can replace the file; run `chmod o-w {}`",
        dir.display(),
        dir.display()
    )]
    Directory {
        /// The directory.
        dir: PathBuf,
        /// Its mode.
        mode: u32,
        /// Its owner.
        owner: u32,
    },
}

/// What opening a private file ran into.
#[derive(Debug)]
pub enum OpenError {
    /// The OS refused (not found, permission denied, …).
    Io(std::io::Error),
    /// The file exists but is not safe to use.
    Unsafe(UnsafeFile),
}

/// The effective user id of this process.
fn effective_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Opens `path` for reading after the checks in this module's header.
pub fn open_private(path: &Path) -> Result<File, OpenError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => return Err(OpenError::Unsafe(UnsafeFile::Symlink)),
        Ok(_) => {}
        Err(e) => return Err(OpenError::Io(e)),
    }
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlags::NOFOLLOW | OFlags::CLOEXEC).bits() as i32)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            // O_NOFOLLOW on a link that appeared after the first look.
            Some(code) if code == rustix::io::Errno::LOOP.raw_os_error() => {
                OpenError::Unsafe(UnsafeFile::Symlink)
            }
            _ => OpenError::Io(e),
        })?;
    let meta = file.metadata().map_err(OpenError::Io)?;
    if !meta.file_type().is_file() {
        return Err(OpenError::Unsafe(UnsafeFile::NotAFile));
    }
    let (mode, owner, user) = (meta.mode() & 0o7777, meta.uid(), effective_uid());
    if owner != user {
        return Err(OpenError::Unsafe(UnsafeFile::Owner { path: path.to_owned(), owner, user, mode }));
    }
    if mode & 0o077 != 0 {
        return Err(OpenError::Unsafe(UnsafeFile::Permissions { path: path.to_owned(), mode, owner }));
    }
    check_directories(path).map_err(OpenError::Unsafe)?;
    Ok(file)
}

/// Refuses when a directory on the way to `path` is writable by others without the sticky bit.
fn check_directories(path: &Path) -> Result<(), UnsafeFile> {
    let absolute = if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir().map(|d| d.join(path)).unwrap_or_else(|_| path.to_owned())
    };
    for dir in absolute.ancestors().skip(1) {
        // A directory that cannot be read says nothing about its safety; the open already worked.
        let Ok(meta) = fs::metadata(dir) else { continue };
        let mode = meta.mode() & 0o7777;
        if mode & 0o002 != 0 && mode & 0o1000 == 0 {
            return Err(UnsafeFile::Directory { dir: dir.to_owned(), mode, owner: meta.uid() });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn private(dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).unwrap();
        fs::write(&path, "secret").unwrap();
        path
    }

    fn refusal(path: &Path) -> UnsafeFile {
        match open_private(path) {
            Err(OpenError::Unsafe(e)) => e,
            Err(OpenError::Io(e)) => panic!("{}: io error {e}", path.display()),
            Ok(_) => panic!("{}: opened", path.display()),
        }
    }

    #[test]
    fn a_0600_file_of_ours_opens() {
        let dir = tempfile::tempdir().unwrap();
        let path = private(dir.path(), "k");
        let mut text = String::new();
        open_private(&path).unwrap().read_to_string(&mut text).unwrap();
        assert_eq!(text, "secret");
    }

    #[test]
    fn modes_symlinks_and_directories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = private(dir.path(), "k");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let e = refusal(&path);
        assert!(matches!(e, UnsafeFile::Permissions { mode: 0o640, .. }), "{e}");
        assert!(e.to_string().contains("UNPROTECTED PRIVATE KEY FILE: mode 0640"), "{e}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();

        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(matches!(refusal(&link), UnsafeFile::Symlink));
        assert!(matches!(refusal(dir.path()), UnsafeFile::NotAFile));

        let open = dir.path().join("open");
        fs::create_dir(&open).unwrap();
        let inside = private(&open, "k");
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        let e = refusal(&inside);
        assert!(matches!(e, UnsafeFile::Directory { mode: 0o777, .. }), "{e}");
        assert!(e.to_string().contains(&format!("directory {} (mode 0777", open.display())), "{e}");
        // With the sticky bit (as /tmp), others cannot replace our file.
        fs::set_permissions(&open, fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(open_private(&inside).is_ok());
    }

    #[test]
    fn another_users_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = private(dir.path(), "k");
        if effective_uid() != 0 {
            eprintln!("SKIPPED: changing a file's owner needs root");
            return;
        }
        std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
        let e = refusal(&path);
        assert!(matches!(e, UnsafeFile::Owner { owner: 65534, user: 0, .. }), "{e}");
        assert!(e.to_string().contains("owned by uid 65534, but spdu runs as uid 0"), "{e}");
    }
}
