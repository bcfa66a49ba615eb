import CKeygateSys
import CMaxMindDB
import KeygateHTTP
#if canImport(Glibc)
import Glibc
#endif

/// A MaxMind DB opened with mmap, answering "which country is this address in". Lookups are
/// read-only and safe from every loop at once.
public final class GeoIPDatabase: @unchecked Sendable {
    public struct OpenError: Error, CustomStringConvertible {
        public let path: String
        public let message: String
        public var description: String { "\(path): \(message)" }
    }

    /// On the heap: libmaxminddb keeps pointers to it inside lookup results.
    private let db: UnsafeMutablePointer<MMDB_s>
    public let path: String
    public let buildEpoch: UInt64
    public let databaseType: String

    public init(path: String) throws(OpenError) {
        self.path = path
        // libmaxminddb maps the file. Map a private copy, so a file rewritten in place (rather
        // than replaced by rename) can never change, or cut short, the pages lookups read.
        let copy = try Self.privateCopy(path)
        defer { close(copy) }
        let handle = UnsafeMutablePointer<MMDB_s>.allocate(capacity: 1)
        handle.initialize(to: MMDB_s())
        let status = MMDB_open("/proc/self/fd/\(copy)", UInt32(MMDB_MODE_MMAP), handle)
        guard status == MMDB_SUCCESS else {
            handle.deallocate()
            throw OpenError(path: path, message: "not a usable MaxMind DB: \(String(cString: MMDB_strerror(status)))")
        }
        db = handle
        buildEpoch = handle.pointee.metadata.build_epoch
        databaseType = handle.pointee.metadata.database_type.map { String(cString: $0) } ?? ""
        // A corrupt tree or data section is refused here, at load time, not met on live traffic.
        // (deinit closes the database on this throw: every property is set by now.)
        if let problem = verify() { throw OpenError(path: path, message: "corrupt MaxMind DB: \(problem)") }
        for probe in Self.probes {
            if case .failure(let message) = lookupResult(probe) {
                throw OpenError(path: path, message: "corrupt MaxMind DB: \(message)")
            }
        }
    }

    static func privateCopy(_ path: String) throws(OpenError) -> Int32 {
        let src = open(path, O_RDONLY | O_CLOEXEC)
        guard src >= 0 else { throw OpenError(path: path, message: "cannot read: \(String(cString: strerror(errno)))") }
        defer { close(src) }
        let dst = kg_memfd("keygate-geoip")
        guard dst >= 0 else { throw OpenError(path: path, message: "cannot copy: \(String(cString: strerror(errno)))") }
        // Not zeroed, and small: a zeroed megabyte here stayed resident in the heap for good.
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 << 10, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            let n = read(src, buffer.baseAddress, buffer.count)
            if n < 0 && errno == EINTR { continue }
            if n < 0 {
                close(dst)
                throw OpenError(path: path, message: "cannot read: \(String(cString: strerror(errno)))")
            }
            if n == 0 { break }
            var off = 0
            while off < n {
                let w = write(dst, buffer.baseAddress! + off, n - off)
                if w <= 0 {
                    close(dst)
                    throw OpenError(path: path, message: "cannot copy: \(String(cString: strerror(errno)))")
                }
                off += w
            }
        }
        return dst
    }

    deinit {
        MMDB_close(db)
        db.deallocate()
    }

    /// Walks the whole search tree and decodes every distinct data record and the metadata,
    /// so that a database libmaxminddb opens but cannot really read is refused up front.
    private func verify() -> String? {
        let md = db.pointee.metadata
        if md.build_epoch > UInt64(Timestamp.nowSeconds() + 7 * 86400) { return "its build date lies in the future" }
        guard [24, 28, 32].contains(md.record_size) else { return "unsupported record size \(md.record_size)" }
        guard md.ip_version == 4 || md.ip_version == 6 else { return "unsupported IP version \(md.ip_version)" }
        guard md.node_count > 0 else { return "empty search tree" }
        var list: UnsafeMutablePointer<MMDB_entry_data_list_s>? = nil
        var status = MMDB_get_metadata_as_entry_data_list(db, &list)
        MMDB_free_entry_data_list(list)
        if status != MMDB_SUCCESS { return "metadata: \(String(cString: MMDB_strerror(status)))" }
        var offsets = Set<UInt32>()
        var node = MMDB_search_node_s()
        for n in 0..<md.node_count {
            status = MMDB_read_node(db, n, &node)
            if status != MMDB_SUCCESS { return String(cString: MMDB_strerror(status)) }
            for (type, entry) in [(node.left_record_type, node.left_record_entry), (node.right_record_type, node.right_record_entry)] {
                switch Int32(type) {
                case MMDB_RECORD_TYPE_INVALID: return "the search tree points outside the file"
                case MMDB_RECORD_TYPE_DATA: offsets.insert(entry.offset)
                default: break
                }
            }
        }
        var countries = 0
        for offset in offsets {
            var entry = MMDB_entry_s(mmdb: db, offset: offset)
            list = nil
            status = MMDB_get_entry_data_list(&entry, &list)
            MMDB_free_entry_data_list(list)
            if status != MMDB_SUCCESS { return String(cString: MMDB_strerror(status)) }
            if case .country = Self.isoCode(&entry) { countries += 1 }
        }
        // A database without a single country is no use to a country filter (a wrong file).
        if countries == 0 { return "it holds no country data (database type \"\(String(cString: md.database_type))\")" }
        return nil
    }

    static let probes: [IPAddress] = [
        "1.1.1.1", "2.125.160.216", "81.2.69.142", "89.160.20.112", "175.16.199.1", "216.160.83.56", "67.43.156.1",
        "202.196.224.1", "127.0.0.1", "10.0.0.1", "255.255.255.255", "0.0.0.0", "2001:218::1", "2a02:d280::1", "::1",
    ].compactMap { IPAddress($0) }

    enum LookupResult {
        case country(UInt16)
        case none
        case failure(String)
    }

    /// The ISO country code packed as two bytes (`CountryCode.pack`), or 0 when unknown.
    public func country(_ address: IPAddress) -> UInt16 {
        if case .country(let c) = lookupResult(address) { return c }
        return 0
    }

    func lookupResult(_ address: IPAddress) -> LookupResult {
        var mmdbError: Int32 = 0
        var result: MMDB_lookup_result_s
        if address.isV4 {
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_addr.s_addr = UInt32(truncatingIfNeeded: address.bits).bigEndian
            result = withUnsafePointer(to: &sin) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { MMDB_lookup_sockaddr(db, $0, &mmdbError) } }
        } else {
            var sin6 = sockaddr_in6()
            sin6.sin6_family = sa_family_t(AF_INET6)
            withUnsafeMutableBytes(of: &sin6.sin6_addr) { raw in
                for i in 0..<16 { raw[i] = UInt8(truncatingIfNeeded: address.bits >> (8 * (15 - i))) }
            }
            result = withUnsafePointer(to: &sin6) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { MMDB_lookup_sockaddr(db, $0, &mmdbError) } }
        }
        if mmdbError != MMDB_SUCCESS {
            // An IPv6 lookup in an IPv4-only database is simply "not found".
            if mmdbError == MMDB_IPV6_LOOKUP_IN_IPV4_DATABASE_ERROR { return .none }
            return .failure(String(cString: MMDB_strerror(mmdbError)))
        }
        guard result.found_entry else { return .none }
        return Self.isoCode(&result.entry)
    }

    /// `country.iso_code`, else `registered_country.iso_code`, of a data record.
    static func isoCode(_ entry: inout MMDB_entry_s) -> LookupResult {
        for top in ["country", "registered_country"] {
            var data = MMDB_entry_data_s()
            let status = top.withCString { t in
                "iso_code".withCString { k in
                    var path: [UnsafePointer<CChar>?] = [t, k, nil]
                    return path.withUnsafeMutableBufferPointer { MMDB_aget_value(&entry, &data, $0.baseAddress) }
                }
            }
            if status == MMDB_LOOKUP_PATH_DOES_NOT_MATCH_DATA_ERROR { continue }
            if status != MMDB_SUCCESS { return .failure(String(cString: MMDB_strerror(status))) }
            if data.has_data && data.type == UInt32(MMDB_DATA_TYPE_UTF8_STRING) && data.data_size == 2 {
                let p = UnsafeRawPointer(data.utf8_string!)
                let a = p.load(as: UInt8.self)
                let b = p.load(fromByteOffset: 1, as: UInt8.self)
                // Only two letters are a country: the code goes into the upstream's head and the
                // usage log as it is, so a damaged database's bytes must stop here.
                guard ByteClass.isAlpha(a), ByteClass.isAlpha(b) else { return .none }
                return .country(CountryCode.pack(a, b))
            }
        }
        return .none
    }
}

extension CountryCode {
    /// Two upper-case ASCII letters as one number, so the hot path compares integers.
    public static func pack(_ a: UInt8, _ b: UInt8) -> UInt16 {
        func up(_ c: UInt8) -> UInt8 { (c >= 0x61 && c <= 0x7A) ? c - 0x20 : c }
        return UInt16(up(a)) << 8 | UInt16(up(b))
    }

    public static func pack(_ code: String) -> UInt16 {
        let u = Array(code.utf8)
        guard u.count == 2 else { return 0 }
        return pack(u[0], u[1])
    }

    /// The two letters of a packed code, as the upstream head and the usage line write them.
    public static func append<S: ByteSink>(_ c: UInt16, to out: inout S) {
        out.append(UInt8(truncatingIfNeeded: c >> 8))
        out.append(UInt8(truncatingIfNeeded: c))
    }

    public static func unpack(_ c: UInt16) -> String {
        String(decoding: [UInt8(c >> 8), UInt8(c & 0xFF)], as: UTF8.self)
    }
}
