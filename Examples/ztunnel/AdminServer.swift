import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle

/// A small HTTP/1.1 server for ztunnel's side ports: metrics (15020), readiness (15021) and
/// admin (15000, localhost). `handle` maps a path to a status, content type and body.
struct AdminServer: ServiceLifecycle.Service {
    typealias Handler = @Sendable (String) async -> (HTTPResponseStatus, String, String)

    let host: String
    let port: Int
    let handle: Handler
    let logger: Logger

    func run() async throws {
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: self.host, port: self.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    return try NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>(wrappingChannelSynchronously: channel)
                }
            }
        self.logger.info("listening", metadata: ["address": "\(self.host):\(self.port)"])
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                try await server.executeThenClose { connections in
                    for try await connection in connections {
                        group.addTask { await self.serve(connection) }
                    }
                }
            }
        } onGracefulShutdown: {
            server.channel.close(promise: nil)
        }
    }

    private func serve(_ connection: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>) async {
        try? await connection.executeThenClose { inbound, outbound in
            var path = "/"
            for try await part in inbound {
                switch part {
                case .head(let head): path = head.uri
                case .body: break
                case .end:
                    let (status, type, body) = await self.handle(path)
                    var headers = HTTPHeaders()
                    headers.add(name: "Content-Type", value: type)
                    headers.add(name: "Content-Length", value: "\(body.utf8.count)")
                    headers.add(name: "Connection", value: "close")
                    try await outbound.write(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers)))
                    try await outbound.write(.body(.byteBuffer(ByteBuffer(string: body))))
                    try await outbound.write(.end(nil))
                    return  // one request per connection (Connection: close)
                }
            }
        }
    }
}
