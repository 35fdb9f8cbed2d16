public import X509
internal import SwiftASN1
internal import Foundation
internal import Crypto

/// PEM and DER encoding of certificates, chains, CSRs and keys, with typed errors.
public enum PEM {
    /// Parses one `CERTIFICATE` block.
    public static func certificate(_ pem: String) throws(IdentityError) -> Certificate {
        do {
            return try Certificate(pemEncoded: pem)
        } catch {
            throw IdentityError.malformedPEM(expected: "CERTIFICATE", detail: "\(error)")
        }
    }

    /// Parses every `CERTIFICATE` block of a bundle, in order. An empty bundle is an error.
    public static func certificates(_ pem: String) throws(IdentityError) -> [Certificate] {
        let documents: [PEMDocument]
        do {
            documents = try PEMDocument.parseMultiple(pemString: pem)
        } catch {
            throw IdentityError.malformedPEM(expected: "CERTIFICATE", detail: "\(error)")
        }
        guard !documents.isEmpty else {
            throw IdentityError.malformedPEM(expected: "CERTIFICATE", detail: "no PEM blocks found")
        }
        var result: [Certificate] = []
        for document in documents {
            guard document.discriminator == "CERTIFICATE" else {
                throw IdentityError.malformedPEM(
                    expected: "CERTIFICATE", detail: "found a \(document.discriminator) block"
                )
            }
            result.append(try certificate(der: document.derBytes))
        }
        return result
    }

    /// Parses a DER certificate.
    public static func certificate(der: [UInt8]) throws(IdentityError) -> Certificate {
        do {
            return try Certificate(derEncoded: der)
        } catch {
            throw IdentityError.malformedDER(expected: "Certificate", detail: "\(error)")
        }
    }

    /// Encodes a certificate as PEM.
    public static func encode(_ certificate: Certificate) -> String {
        // Serialising a parsed or freshly built certificate cannot fail: its DER
        // form was produced or checked on the way in.
        (try? certificate.serializeAsPEM().pemString) ?? ""
    }

    /// Encodes a chain as concatenated PEM blocks, each ending in a newline.
    public static func encode(_ chain: [Certificate]) -> String {
        chain.map { encode($0) + "\n" }.joined()
    }

    /// The DER bytes of a certificate.
    public static func der(_ certificate: Certificate) -> [UInt8] {
        var serializer = DER.Serializer()
        _ = try? serializer.serialize(certificate)
        return serializer.serializedBytes
    }

    /// Parses a `CERTIFICATE REQUEST` block.
    public static func csr(_ pem: String) throws(IdentityError) -> CertificateSigningRequest {
        do {
            return try CertificateSigningRequest(pemEncoded: pem)
        } catch CryptoKitError.incorrectParameterSize {
            throw weakKey
        } catch {
            throw IdentityError.malformedPEM(expected: "CERTIFICATE REQUEST", detail: "\(error)")
        }
    }

    /// Parses a DER CSR.
    public static func csr(der: [UInt8]) throws(IdentityError) -> CertificateSigningRequest {
        do {
            return try CertificateSigningRequest(derEncoded: der)
        } catch CryptoKitError.incorrectParameterSize {
            throw weakKey
        } catch {
            throw IdentityError.malformedDER(expected: "CertificationRequest", detail: "\(error)")
        }
    }

    /// swift-crypto refuses to even load RSA keys below 2048 bits; say so instead of
    /// calling a well-formed request malformed.
    private static let weakKey = IdentityError.unsupportedKey("RSA key below 2048 bits")

    /// Encodes a CSR as PEM.
    public static func encode(_ csr: CertificateSigningRequest) -> String {
        (try? csr.serializeAsPEM().pemString) ?? ""
    }

    /// The DER bytes of a CSR.
    public static func der(_ csr: CertificateSigningRequest) -> [UInt8] {
        var serializer = DER.Serializer()
        _ = try? serializer.serialize(csr)
        return serializer.serializedBytes
    }

    /// Parses a private key (`PRIVATE KEY` PKCS#8, `EC PRIVATE KEY` SEC1 or `RSA PRIVATE KEY`).
    public static func privateKey(_ pem: String) throws(IdentityError) -> Certificate.PrivateKey {
        do {
            return try Certificate.PrivateKey(pemEncoded: pem)
        } catch {
            throw IdentityError.malformedPEM(expected: "PRIVATE KEY", detail: "\(error)")
        }
    }

    /// Encodes a private key as PKCS#8 `PRIVATE KEY` PEM (what ztunnel and istiod write).
    public static func encode(_ key: Certificate.PrivateKey) throws(IdentityError) -> String {
        do {
            return try key.serializeAsPEM().pemString
        } catch {
            throw IdentityError.unsupportedKey("\(key): \(error)")
        }
    }
}
