/// Somewhere bytes are appended: a byte array, or a `ByteBuffer` over raw memory. Writers of
/// heads and log lines are generic over it, so the hot paths can write into raw memory (a
/// store and an add per byte) while everything else keeps using arrays.
public protocol ByteSink {
    mutating func append(_ byte: UInt8)
    mutating func appendBytes(_ bytes: UnsafeRawBufferPointer)
}

extension ByteSink {
    /// A literal's bytes straight from the binary.
    @inlinable
    public mutating func appendLiteral(_ literal: StaticString) {
        appendBytes(UnsafeRawBufferPointer(start: literal.utf8Start, count: literal.utf8CodeUnitCount))
    }

    @inlinable
    public mutating func appendBytes(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { appendBytes($0) }
    }
}

extension Array: ByteSink where Element == UInt8 {
    @inlinable
    public mutating func appendBytes(_ bytes: UnsafeRawBufferPointer) {
        append(contentsOf: bytes)
    }
}

/// A growable byte buffer in raw memory, owned by one thread (a loop's usage batch). Appending
/// costs a bounds check and a copy; `Array.append(contentsOf:)` costs about a hundred
/// instructions a call in its uniqueness and capacity checks.
public final class ByteBuffer: ByteSink {
    // Setters usable from the inlined appends, not public.
    @usableFromInline var storage: UnsafeMutablePointer<UInt8>
    @usableFromInline var used = 0
    @usableFromInline var size: Int
    public var count: Int { used }

    public init(capacity: Int) {
        size = max(capacity, 16)
        storage = .allocate(capacity: size)
    }

    deinit { storage.deallocate() }

    @usableFromInline
    func grow(to need: Int) {
        let c = max(need, size * 2)
        let bigger = UnsafeMutablePointer<UInt8>.allocate(capacity: c)
        bigger.update(from: storage, count: used)
        storage.deallocate()
        storage = bigger
        size = c
    }

    @inlinable
    public func append(_ byte: UInt8) {
        if used == size { grow(to: used + 1) }
        storage[used] = byte
        used += 1
    }

    @inlinable
    public func appendBytes(_ bytes: UnsafeRawBufferPointer) {
        let n = bytes.count
        guard n > 0 else { return }
        if used + n > size { grow(to: used + n) }
        UnsafeMutableRawPointer(storage + used).copyMemory(from: bytes.baseAddress!, byteCount: n)
        used += n
    }

    /// What was written.
    public var bytes: UnsafeBufferPointer<UInt8> { UnsafeBufferPointer(start: storage, count: used) }

    public func removeAll() { used = 0 }
}
