internal import MeshIdentity
internal import X509

/// SPIFFE IDs as they arrive in certificates' URI SANs (`spiffe://…`) and in policies
/// (Istio's principal form). One byte picks the form. Property: an accepted ID is accepted
/// again in the form we write it, as the same ID, in both forms.
enum SPIFFETarget {
    static func run(_ input: [UInt8]) throws(FuzzFailure) -> Bool {
        var reader = FuzzInput(input)
        let principalForm = reader.byte() & 1 == 1
        let text = reader.restAsText
        guard let id = principalForm ? try? SPIFFEID(principal: text) : try? SPIFFEID(parsing: text) else { return false }
        try require((try? SPIFFEID(parsing: id.description)) == id, "\(text.debugDescription) → \(id) does not read back")
        try require((try? SPIFFEID(principal: id.principal)) == id, "\(text.debugDescription) → principal \(id.principal) does not read back")
        try require((try? TrustDomain(id.trustDomain.name)) == id.trustDomain, "trust domain \(id.trustDomain) does not read back")
        return true
    }
}

/// Certificate signing requests as a workload sends them to the CA (PEM, as Istio's
/// `CreateCertificate` carries them, or DER). One byte picks the encoding. Properties: a
/// malformed, mis-signed or weak request is refused with an ``IdentityError``, never a
/// trap; a request that is signed gets a chain whose leaf carries the request's key and
/// the identity the caller authenticated as, not anything the request asked for.
enum CSRTarget {
    /// One CA per process: making a key per input would be most of the work.
    static let authority = try! CertificateAuthority.selfSigned()
    static let identity = try! SPIFFEID(parsing: "spiffe://cluster.local/ns/fuzz/sa/fuzz")

    static func run(_ input: [UInt8]) throws(FuzzFailure) -> Bool {
        var reader = FuzzInput(input)
        let isPEM = reader.byte() & 1 == 0
        let chain: [Certificate]
        let key: Certificate.PublicKey
        do {
            let request = isPEM ? try PEM.csr(reader.restAsText) : try PEM.csr(der: reader.rest)
            key = request.publicKey
            chain = try Self.authority.sign(request, for: Self.identity)
        } catch {
            return false
        }
        guard let leaf = chain.first else { throw FuzzFailure("an empty chain") }
        try require(leaf.publicKey == key, "the leaf does not carry the request's key")
        let uris = (try? leaf.extensions.subjectAlternativeNames)??.compactMap { name -> String? in
            if case .uniformResourceIdentifier(let uri) = name { return uri }
            return nil
        } ?? []
        try require(uris == [Self.identity.description], "the leaf's URI SANs are \(uris)")
        return true
    }
}
