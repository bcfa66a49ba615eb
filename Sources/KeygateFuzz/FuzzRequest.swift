import KeygateHTTP

/// libFuzzer entry: the request head scanner and parser, then the chunked decoder on what
/// follows the head, exactly as a connection drives them. The same bytes also go through the
/// response relay as an upstream's answer and through the WebSocket frame tracker, and a request
/// the gate would forward has its upstream head checked. Any crash or sanitizer report is a bug,
/// and so is a request or an answer whose outcome depends on how it was split into reads, and a
/// forwarded head that carries a credential or reads back differently.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRequest(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    fuzzAnswer(bytes)
    fuzzFrames(bytes)
    fuzzRequestReads(bytes)
    var scanner = HeadScanner(maxHeadBytes: 4096, maxLineBytes: 1024, maxRequestLineBytes: 1100)
    guard let end = try? scanner.scan(bytes) else { return 0 }
    guard let head = try? RequestParser.parse(UnsafeRawBufferPointer(rebasing: bytes[scanner.start..<end])) else { return 0 }
    fuzzForwardedHead(head, pick: inputHash(bytes))
    _ = head.pathString()
    _ = head.isConnectionOption(head.method)
    if head.framing == .chunked {
        var decoder = ChunkedDecoder(maxTrailerBytes: 1024)
        var total = 0
        // Feed the body in two pieces to exercise resumption.
        let body = UnsafeRawBufferPointer(rebasing: bytes[end...])
        let half = body.count / 2
        if let used = try? decoder.decode(UnsafeRawBufferPointer(rebasing: body[0..<half]), onData: { total += $0.count }), used == half {
            _ = try? decoder.decode(UnsafeRawBufferPointer(rebasing: body[half...]), onData: { total += $0.count })
        }
    }
    var response = HeadScanner(maxHeadBytes: 4096, maxLineBytes: 1024, maxRequestLineBytes: 1100)
    if let rend = try? response.scan(bytes) {
        _ = try? ResponseParser.parse(UnsafeRawBufferPointer(rebasing: bytes[response.start..<rend]), requestWasHead: size % 2 == 0)
    }
    return 0
}

#if KEYGATE_FUZZ
@_silgen_name("LLVMFuzzerRunDriver")
func runFuzzerDriver(
    _ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>, Int) -> CInt
) -> CInt

/// SwiftPM links executables with their entry point named `<module>_main`; hand over to
/// libFuzzer's driver from there.
@_cdecl("KeygateFuzz_main")
func keygateFuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var count = argc
    var args = argv
    return runFuzzerDriver(&count, &args) { fuzzRequest($0, $1) }
}
#else
/// Without libFuzzer (a plain `swift build`): say how to build the real thing.
@_cdecl("KeygateFuzz_main")
func keygateFuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    print("KeygateFuzz: build it with `make fuzz` (-sanitize=fuzzer,address)")
    return 2
}
#endif
