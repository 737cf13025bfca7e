import LifeguardConfig
import LifeguardMetrics
import Logging
import NIOCore
import NIOEmbedded
import NIOPosix
import PGWire
import PoolCore
import Testing
import Upstream

@testable import Proxy

/// The client handler's decisions before any server is involved, in an EmbeddedChannel.
@Suite struct ClientChannelHandlerTests {
    let metrics = LifeguardMetrics(version: "test")
    let group = EmbeddedEventLoop()

    /// - Parameter poolGroup: where the pools open server connections (an EmbeddedEventLoop cannot connect).
    func makeChannel(
        counter: ReadCounter? = nil,
        poolGroup: (any EventLoopGroup)? = nil,
        _ configure: (inout LifeguardConfiguration) -> Void = { _ in }
    ) throws -> EmbeddedChannel {
        var configuration = LifeguardConfiguration.defaults
        configuration.upstream = nil
        configuration.databases = [
            DatabaseConfiguration(
                name: "app",
                dsn: try ConnInfo("host=127.0.0.1 port=1 dbname=app user=app"),
                poolMode: .transaction,
                poolSize: 1,
                minSize: 0,
                maxOverflow: 0,
                poolTimeout: .seconds(1)
            )
        ]
        configure(&configuration)
        let context = ProxyContext(
            configuration: configuration,
            userList: PGUserList(secrets: [:]),
            clientTLS: nil,
            metrics: self.metrics,
            logger: Logger(label: "test"),
            group: poolGroup ?? self.group,
            makeObserver: { _, _ in NoOpPoolObserver() }
        )
        let channel = EmbeddedChannel(loop: self.group)
        if let counter { try channel.pipeline.syncOperations.addHandler(counter) }
        let id = try #require(context.clients.register(channel))
        try channel.pipeline.syncOperations.addHandler(
            ClientChannelHandler(context: context, clientID: id, allocator: channel.allocator)
        )
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 5432)).wait()
        return channel
    }

    func startup(_ parameters: [(String, String)]) -> ByteBuffer {
        var buffer = ByteBuffer()
        PGStartupPacket.startup(
            PGStartupMessage(parameters: parameters.map { PGStartupMessage.Parameter(name: $0.0, value: $0.1) })
        ).encode(into: &buffer)
        return buffer
    }

    /// Every backend message written so far.
    func replies(_ channel: EmbeddedChannel) throws -> [PGBackendMessage] {
        var all = ByteBuffer()
        while var part = try channel.readOutbound(as: ByteBuffer.self) { all.writeBuffer(&part) }
        var messages: [PGBackendMessage] = []
        while let frame = try PGFrameDecoder().decodeFrame(buffer: &all) {
            messages.append(try PGBackendMessage(frame: frame))
        }
        return messages
    }

    func fatal(_ messages: [PGBackendMessage]) -> PGErrorFields? {
        for case .errorResponse(let fields) in messages where fields.severity == "FATAL" { return fields }
        return nil
    }

    @Test func sslAndGSSRequestsGetNThenTheStartupGoesOn() throws {
        let channel = try self.makeChannel()
        var ssl = ByteBuffer()
        PGStartupPacket.sslRequest.encode(into: &ssl)
        try channel.writeInbound(ssl)
        #expect(try channel.readOutbound(as: ByteBuffer.self) == ByteBuffer(bytes: [UInt8(ascii: "N")]))
        var gss = ByteBuffer()
        PGStartupPacket.gssEncryptionRequest.encode(into: &gss)
        try channel.writeInbound(gss)
        #expect(try channel.readOutbound(as: ByteBuffer.self) == ByteBuffer(bytes: [UInt8(ascii: "N")]))
        // Then a StartupMessage is still expected: an unknown database proves it was read as one.
        try channel.writeInbound(self.startup([("user", "app"), ("database", "nope")]))
        #expect(self.fatal(try self.replies(channel))?.sqlState == "3D000")
    }

    @Test func unknownDatabaseIs3D000NamingTheConfiguration() throws {
        let channel = try self.makeChannel()
        try channel.writeInbound(self.startup([("user", "app"), ("database", "nope")]))
        let error = try #require(self.fatal(try self.replies(channel)))
        #expect(error.sqlState == PGSQLState.invalidCatalogName)
        #expect(error.message?.contains("database \"nope\" does not exist in Lifeguard's configuration") == true)
        #expect(error.message?.contains("[databases]") == true)
        #expect(!channel.isActive)
    }

    @Test func missingUserIs28000() throws {
        let channel = try self.makeChannel()
        try channel.writeInbound(self.startup([("database", "app")]))
        #expect(self.fatal(try self.replies(channel))?.sqlState == PGSQLState.invalidAuthorizationSpecification)
    }

    @Test(
        arguments: [
            [0, 0, 0, 3],  // length shorter than the header
            [0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0],  // negative length
            [0, 0, 0, 8, 0, 2, 0, 0],  // protocol 2.0
            [0, 0, 0, 8, 0x04, 0xD2, 0x16, 0x31],  // unknown 1234.5681 request code
            [0, 1, 0, 0, 0, 3, 0, 0],  // above the 10,000-byte startup limit
        ] as [[UInt8]]
    )
    func garbageBeforeLoginIsFatalAndCounted(bytes: [UInt8]) throws {
        let channel = try self.makeChannel()
        _ = try? channel.writeInbound(ByteBuffer(bytes: bytes))
        let error = try #require(self.fatal(try self.replies(channel)))
        #expect(error.sqlState == PGSQLState.protocolViolation || error.sqlState == PGSQLState.featureNotSupported)
        #expect(!channel.isActive)
        #expect(self.metrics.render().contains("lifeguard_client_rejected_total{reason=\"protocol\"} 1"))
    }

    @Test func overMaxClientConnIs53300() throws {
        let first = try self.makeChannel { $0.maxClientConn = 0 }
        try first.writeInbound(self.startup([("user", "app"), ("database", "app")]))
        #expect(self.fatal(try self.replies(first))?.sqlState == PGSQLState.tooManyConnections)
        #expect(self.metrics.render().contains("lifeguard_client_rejected_total{reason=\"max_client_conn\"} 1"))
    }

    @Test func aClientThatSendsMoreThanCanWaitForAServerIsNotReadUntilItGetsOne() throws {
        // The upstream (port 1) never answers: the client waits for a server connection while it sends.
        let counter = ReadCounter()
        // Never shut down: the pool keeps retrying its connect after the test.
        let channel = try self.makeChannel(counter: counter, poolGroup: MultiThreadedEventLoopGroup.singleton) {
            $0.databases[0].poolTimeout = .seconds(30)
        }
        try channel.writeInbound(self.startup([("user", "app"), ("database", "app")]))
        var query = ByteBuffer()
        PGFrontendMessage.query("SELECT '\(String(repeating: "x", count: 16 * 1024))'").encode(into: &query)
        for _ in 0..<3 { try channel.writeInbound(query) }
        channel.read()
        let reading = counter.reads
        #expect(reading > 0)
        // Past 64 KiB waiting, reads stop reaching the socket.
        for _ in 0..<2 { try channel.writeInbound(query) }
        channel.read()
        channel.read()
        #expect(counter.reads == reading)
        try channel.close().wait()
    }

    @Test func aQueryPipelinedBehindTheStartupMessageIsReadAsAQuery() throws {
        let channel = try self.makeChannel(poolGroup: MultiThreadedEventLoopGroup.singleton)
        var bytes = self.startup([("user", "app"), ("database", "app")])
        PGFrontendMessage.query("SELECT 1").encode(into: &bytes)
        try channel.writeInbound(bytes)
        // Waiting for a server connection (the upstream never answers), not refused as a bad startup packet.
        #expect(self.fatal(try self.replies(channel)) == nil)
        #expect(channel.isActive)
        try channel.close().wait()
    }

    @Test func aClosedClientLeavesNothingBehind() throws {
        weak var handler: ClientChannelHandler?
        do {
            let channel = try self.makeChannel()
            handler = try channel.pipeline.syncOperations.handler(type: ClientChannelHandler.self)
            // Refused and closed by Lifeguard, which leaves the most behind if anything does.
            try channel.writeInbound(self.startup([("user", "app"), ("database", "nope")]))
            _ = try? channel.finish()
            // NIO removes the handlers of a closed channel in a task of its own.
            self.group.run()
        }
        #expect(handler == nil, "the handler outlived its channel (a reference cycle)")
    }

    @Test func aMessageThatIsNotAPasswordDuringAuthenticationIs08P01() throws {
        let channel = try self.makeChannel {
            $0.authType = .md5
        }
        try channel.writeInbound(self.startup([("user", "app"), ("database", "app")]))
        // AuthenticationMD5Password asks for a password; a Query instead is a protocol violation.
        guard case .authentication(.md5Password)? = try self.replies(channel).first else {
            Issue.record("expected an md5 challenge")
            return
        }
        var query = ByteBuffer()
        PGFrontendMessage.query("SELECT 1").encode(into: &query)
        try channel.writeInbound(query)
        #expect(self.fatal(try self.replies(channel))?.sqlState == PGSQLState.protocolViolation)
        #expect(!channel.isActive)
    }
}
