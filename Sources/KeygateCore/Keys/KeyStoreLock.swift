import FoundationEssentials
import Glibc

/// An advisory lock beside the key store (`keys.jsonl.lock`): the store itself is replaced by
/// rename, so the lock lives on a file that stays put.
public final class KeyStoreLock {
    let fd: Int32

    public init(storePath: String) throws(KeyStoreError) {
        let lockPath = storePath + ".lock"
        fd = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw KeyStoreError(path: lockPath, line: nil, message: "cannot open lock: \(String(cString: strerror(errno)))") }
        // Shared by the CLI (maybe as root) and the gate's own user: owned like the store.
        KeyStoreFile.keepOwner(of: storePath, folder: PathText.directory(of: storePath), on: fd)
        while flock(fd, LOCK_EX) != 0 {
            if errno == EINTR { continue }
            close(fd)
            throw KeyStoreError(path: lockPath, line: nil, message: "cannot lock: \(String(cString: strerror(errno)))")
        }
    }

    deinit {
        flock(fd, LOCK_UN)
        close(fd)
    }
}
