import COSSigning
import Foundation

/// A request ready to send: URL, every header including `Authorization`, body. Built and signed purely,
/// so what is signed and what is sent come from the same values.
struct PreparedRequest: Sendable {
    var method: String
    var url: URL
    /// Every header to send except `Host` and `Content-Length`, which URLSession writes itself (their
    /// signed values are computed to match, see ``CIRequestBuilder``).
    var headers: [(name: String, value: String)]
    var body: [UInt8]
    /// The headers that were signed, with their values, for tests and debugging.
    var signedHeaders: [(name: String, value: String)]
}

/// Builds and signs CI requests.
enum CIRequestBuilder {
    /// - Parameters:
    ///   - method: `GET` or `POST`.
    ///   - path: The decoded path below the endpoint, for example `/jobs/j1,j2`.
    ///   - query: Decoded query parameters.
    ///   - body: The body; empty for GET.
    ///   - contentType: The body's type, or `nil` for no body.
    ///   - configuration: Endpoint and credentials.
    ///   - now: The start of the signature's validity.
    static func prepare(
        method: String,
        path: String,
        query: [(name: String, value: String)],
        body: [UInt8],
        contentType: String?,
        configuration: CIConfiguration,
        now: Date
    ) throws(CIClientError) -> PreparedRequest {
        let endpoint = configuration.endpoint
        guard let scheme = endpoint.scheme?.lowercased(), let host = endpoint.host, !host.isEmpty else {
            throw CIClientError(code: .invalidConfiguration, detail: "endpoint has no scheme or host")
        }
        var basePath = endpoint.path
        while basePath.hasSuffix("/") { basePath.removeLast() }
        let fullPath = basePath + path
        let bracketedHost = host.contains(":") && !host.hasPrefix("[") ? "[\(host)]" : host
        var authority = bracketedHost
        if let port = endpoint.port, port != (scheme == "https" ? 443 : 80) { authority += ":\(port)" }

        var urlText = "\(scheme)://\(authority)\(encodePath(fullPath))"
        if !query.isEmpty {
            urlText += "?" + query.map { "\(COSSigner.urlEncode($0.name))=\(COSSigner.urlEncode($0.value))" }.joined(separator: "&")
        }
        guard let url = URL(string: urlText) else {
            throw CIClientError(code: .invalidConfiguration, detail: "endpoint and path do not form a URL")
        }

        // The Host URLSession sends is the URL's authority with a non-default port; sign exactly that.
        var allHeaders: [(name: String, value: String)] = [(name: "Host", value: authority)]
        if let contentType { allHeaders.append((name: "Content-Type", value: contentType)) }
        if method == "POST" || method == "PUT" || !body.isEmpty { allHeaders.append((name: "Content-Length", value: String(body.count))) }
        allHeaders.append(contentsOf: configuration.credentials.securityTokenHeaders(for: .ci))

        let signedHeaders = COSSigner.headersToSign(from: allHeaders)
        let signature = COSSigner.sign(
            COSSigningRequest(method: method, path: fullPath, query: query, headers: signedHeaders),
            credentials: configuration.credentials,
            now: now,
            validFor: configuration.signatureValidity
        )
        var sent = allHeaders.filter { $0.name != "Host" && $0.name != "Content-Length" }
        sent.append((name: "Authorization", value: signature.authorization))
        return PreparedRequest(method: method, url: url, headers: sent, body: body, signedHeaders: signedHeaders)
    }

    /// Percent-encodes a decoded path for the URL: RFC 3986 unreserved characters, `/` (the separator),
    /// and `,` `:` `@` stay literal (a comma joins several JobIds); every other byte becomes `%XX`.
    static func encodePath(_ path: String) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(path.utf8.count)
        let hex = Array("0123456789ABCDEF".utf8)
        for byte in path.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "~"), UInt8(ascii: "/"), UInt8(ascii: ","),
                UInt8(ascii: ":"), UInt8(ascii: "@"):
                out.append(byte)
            default:
                out.append(UInt8(ascii: "%"))
                out.append(hex[Int(byte >> 4)])
                out.append(hex[Int(byte & 0x0F)])
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
