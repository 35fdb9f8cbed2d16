/// TLS 1.3 plaintext records for tests of what reads the start of a handshake
/// (RFC 8446 §4.1.3, §5.1), shared by the HBONE tests and the fuzz seeds.
public enum TLSRecords {
    /// A ServerHello record as BoringSSL writes one — legacy_version 0x0303, a random, a
    /// `sessionID`-byte session id echo, `suite`, no compression, supported_versions and an
    /// X25519 key_share — followed by the start of an encrypted record, as in a real flight.
    public static func serverHello(suite: UInt16, sessionID: Int = 32) -> [UInt8] {
        var body: [UInt8] = [3, 3] + (0..<32).map { UInt8($0 &* 7) }
        body += [UInt8(sessionID)] + (0..<sessionID).map { UInt8($0) }
        body += [UInt8(suite >> 8), UInt8(suite & 0xFF), 0]
        let extensions: [UInt8] = [0, 43, 0, 2, 3, 4] + [0, 51, 0, 36, 0, 29, 0, 32] + [UInt8](repeating: 0xAB, count: 32)
        body += [UInt8(extensions.count >> 8), UInt8(extensions.count & 0xFF)] + extensions
        let message: [UInt8] = [2, 0, UInt8(body.count >> 8), UInt8(body.count & 0xFF)] + body
        return record(22, message) + record(23, [UInt8](repeating: 0x5A, count: 40))
    }

    /// One record of content type `type` around `fragment`.
    public static func record(_ type: UInt8, _ fragment: [UInt8]) -> [UInt8] {
        [type, 3, 3, UInt8(fragment.count >> 8), UInt8(fragment.count & 0xFF)] + fragment
    }

    /// `bytes`, whose first record is a handshake record, with that record's fragment re-cut
    /// into records of `size` bytes each (RFC 8446 §5.1 allows any fragmentation).
    public static func fragmented(_ bytes: [UInt8], size: Int) -> [UInt8] {
        let length = Int(bytes[3]) << 8 | Int(bytes[4])
        let message = Array(bytes[5..<(5 + length)])
        return stride(from: 0, to: message.count, by: size).flatMap {
            record(22, Array(message[$0..<min($0 + size, message.count)]))
        } + bytes[(5 + length)...]
    }

    /// An alert record with `description` (40: handshake_failure, 90: user_canceled), fatal
    /// or a warning.
    public static func alert(_ description: UInt8, fatal: Bool = true) -> [UInt8] {
        record(21, [fatal ? 2 : 1, description])
    }

    /// An empty handshake record, which BoringSSL skips (up to 32 in a row).
    public static let emptyHandshake: [UInt8] = [22, 3, 3, 0, 0]
}
