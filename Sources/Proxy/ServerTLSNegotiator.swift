import NIOCore
import NIOSSL
import NIOTLS
import PGWire
import PoolCore

/// The first moments of a server connection that may use TLS: sends the SSLRequest (or starts TLS at once with
/// `sslnegotiation=direct`), reads the server's one-byte answer, starts TLS, and then hands the channel to the
/// ``ServerChannelHandler`` that logs in. Its failures fail the startup with a ``ConnectError`` of reason `tls`.
final class ServerTLSNegotiator: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private enum Step {
        case awaitingAnswer
        case handshaking
        case done
    }

    private let tls: ServerTLS
    private let host: String
    private let serverDescription: String
    private let loginHandler: ServerChannelHandler
    private let promise: EventLoopPromise<ServerStartupResult>
    private let failure = TLSFailureNote()
    private var step = Step.awaitingAnswer
    private var failed = false

    init(
        tls: ServerTLS,
        host: String,
        serverDescription: String,
        loginHandler: ServerChannelHandler,
        promise: EventLoopPromise<ServerStartupResult>
    ) {
        self.tls = tls
        self.host = host
        self.serverDescription = serverDescription
        self.loginHandler = loginHandler
        self.promise = promise
    }

    func channelActive(context: ChannelHandlerContext) {
        if self.tls.direct {
            self.startTLS(context: context)
        } else {
            var buffer = context.channel.allocator.buffer(capacity: 8)
            PGStartupPacket.sslRequest.encode(into: &buffer)
            context.writeAndFlush(self.wrapOutboundOut(buffer), promise: nil)
        }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .awaitingAnswer = self.step else {
            context.fireChannelRead(data)
            return
        }
        var buffer = self.unwrapInboundIn(data)
        guard let answer = buffer.readInteger(as: UInt8.self) else { return }
        switch answer {
        case UInt8(ascii: "S"):
            // Bytes after the answer and before the handshake would be read as if TLS protected them
            // (CVE-2021-23222): refused.
            guard buffer.readableBytes == 0 else {
                self.fail(context: context, "received unencrypted data after SSL response")
                return
            }
            self.startTLS(context: context)
        case UInt8(ascii: "N"):
            guard !self.tls.mode.requiresTLS else {
                self.fail(
                    context: context,
                    "server does not support SSL, but SSL was required (sslmode=\(self.tls.mode.rawValue))"
                )
                return
            }
            self.handOver(context: context, encrypted: false)
        case UInt8(ascii: "E"):
            self.fail(context: context, "server sent an error response during SSL exchange")
        default:
            self.fail(context: context, "received invalid response to SSL negotiation: \(answer)")
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .handshaking = self.step, case TLSUserEvent.handshakeCompleted(let negotiated) = event {
            if self.tls.direct && negotiated != "postgresql" {
                self.fail(context: context, "server did not select the \"postgresql\" ALPN protocol for direct SSL")
                return
            }
            self.handOver(context: context, encrypted: true)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard case .done = self.step else {
            self.fail(context: context, self.failure.value ?? Self.describe(error))
            return
        }
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if case .done = self.step {
            context.fireChannelInactive()
            return
        }
        self.fail(context: context, self.failure.value ?? "the server closed the connection during the SSL exchange")
        context.fireChannelInactive()
    }

    private func startTLS(context: ChannelHandlerContext) {
        self.step = .handshaking
        do {
            guard let handler = try self.tls.makeHandler(host: self.host, failure: self.failure) else {
                self.fail(context: context, "TLS is not configured")
                return
            }
            try context.pipeline.syncOperations.addHandler(handler, position: .before(self))
        } catch {
            self.fail(context: context, Self.describe(error))
        }
    }

    /// The login handler takes over, before this one leaves: it sends the StartupMessage at once.
    private func handOver(context: ChannelHandlerContext, encrypted: Bool) {
        self.step = .done
        do {
            try context.pipeline.syncOperations.addHandler(self.loginHandler, position: .after(self))
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        } catch {
            self.fail(context: context, "\(error)")
        }
    }

    private func fail(context: ChannelHandlerContext, _ message: String) {
        guard !self.failed else { return }
        self.failed = true
        self.step = .done
        self.promise.fail(
            ServerStartupError(
                error: ConnectError(
                    reason: .tls,
                    message: "connection to server \(self.serverDescription) failed: \(message)",
                    // As a direct connection would: the client hears it now, not after pool_timeout. The pool
                    // still retries with backoff, so a corrected certificate is picked up.
                    isPermanent: true
                )
            )
        )
        context.close(promise: nil)
    }

    /// BoringSSL's and NIOSSL's errors in words an operator can act on.
    static func describe(_ error: any Error) -> String {
        switch error {
        case NIOSSLError.handshakeFailed(let inner):
            return "SSL handshake failed: \(inner)"
        case let error as NIOSSLExtraError:
            return "SSL error: \(error)"
        default:
            return "SSL error: \(error)"
        }
    }
}
