/// Up to four byte ranges that leave together in one write: a head, a chunk header, the data
/// and its CRLF. Held inline, so handing a body on allocates nothing; an array of parts was one
/// or two heap allocations for every read relayed.
public struct WriteParts: RandomAccessCollection {
    public static let capacity = 4
    private var p0: UnsafeRawBufferPointer
    private var p1 = UnsafeRawBufferPointer(start: nil, count: 0)
    private var p2 = UnsafeRawBufferPointer(start: nil, count: 0)
    private var p3 = UnsafeRawBufferPointer(start: nil, count: 0)
    public private(set) var count: Int

    public init(_ a: UnsafeRawBufferPointer) {
        p0 = a
        count = 1
    }

    public init(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer, _ c: UnsafeRawBufferPointer) {
        p0 = a
        p1 = b
        p2 = c
        count = 3
    }

    /// These parts with `head` in front of them.
    public func prepending(_ head: UnsafeRawBufferPointer) -> WriteParts {
        precondition(count < Self.capacity, "more write parts than fit")
        var r = WriteParts(head)
        r.p1 = p0
        r.p2 = p1
        r.p3 = p2
        r.count = count + 1
        return r
    }

    public var startIndex: Int { 0 }
    public var endIndex: Int { count }

    public subscript(i: Int) -> UnsafeRawBufferPointer {
        precondition(i >= 0 && i < count, "write part out of range")
        switch i {
        case 0: return p0
        case 1: return p1
        case 2: return p2
        default: return p3
        }
    }

    /// Bytes in all parts together.
    public var byteCount: Int {
        var n = 0
        for p in self { n += p.count }
        return n
    }
}
