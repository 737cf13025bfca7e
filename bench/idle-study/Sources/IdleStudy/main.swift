// idle-study MODE N [PORT] [THREADS]
//
// Listens on 127.0.0.1:PORT, accepts connections until N are open, waits SETTLE seconds (env, default 2), then prints
// one line: mode, N, VmRSS before/after, malloc in-use bytes before/after (mallinfo2, all arenas), kernel TCP memory
// (pages, /proc/net/sockstat) and Slab before/after, and kB of RSS per connection. Exits after printing.
//
// Modes:
//   nio-bare     SwiftNIO ServerBootstrap, child channels with no handler
//   nio-handler  SwiftNIO, one handler per child holding ~230 bytes of state
//   nio-small    SwiftNIO, FixedSizeRecvByteBufferAllocator(64), maxMessagesPerRead 1, autoRead off after first read
//   nio-lgalloc  as nio-handler, with Lifeguard's receive allocator: AdaptiveRecvByteBufferAllocator(64, 256, 65536)
//   epoll        raw epoll accept loop; per connection a 16-byte struct (fd, state, lazily allocated 64-byte buffer)
//   epoll-record as epoll, plus per connection an object with the ~230 bytes of state of nio-handler's handler (what a
//                logged-in idle client parked outside NIO would keep)
import CIdleShim
import Foundation
import Glibc
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

func vmRSSkB() -> Int {
    guard let s = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return -1 }
    for line in s.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        return Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]) ?? -1
    }
    return -1
}

func heapInUse() -> Int {
    Int(idle_heap_in_use())
}

/// Kernel TCP buffer memory in pages ("TCP: ... mem P") and sockets in use, machine-wide.
func tcpSockstat() -> (inuse: Int, memPages: Int) {
    guard let s = try? String(contentsOfFile: "/proc/net/sockstat", encoding: .utf8) else { return (-1, -1) }
    for line in s.split(separator: "\n") where line.hasPrefix("TCP:") {
        let f = line.split(separator: " ")
        var inuse = -1
        var mem = -1
        for i in 0..<(f.count - 1) {
            if f[i] == "inuse" { inuse = Int(f[i + 1]) ?? -1 }
            if f[i] == "mem" { mem = Int(f[i + 1]) ?? -1 }
        }
        return (inuse, mem)
    }
    return (-1, -1)
}

func slabkB() -> Int {
    guard let s = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8) else { return -1 }
    for line in s.split(separator: "\n") where line.hasPrefix("Slab:") {
        return Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]) ?? -1
    }
    return -1
}

struct Snapshot {
    var rss = vmRSSkB()
    var heap = heapInUse()
    var tcp = tcpSockstat()
    var slab = slabkB()
}

let args = CommandLine.arguments
guard args.count >= 3, let n = Int(args[2]) else {
    FileHandle.standardError.write("usage: IdleStudy MODE N [PORT] [THREADS]\n".data(using: .utf8)!)
    exit(2)
}
let mode = args[1]
let port = args.count > 3 ? Int(args[3])! : 15432
let threads = args.count > 4 ? Int(args[4])! : 1
let settle = Double(ProcessInfo.processInfo.environment["SETTLE"] ?? "2")!

var before = Snapshot()

var settleDone = false

func report(_ count: Int) -> Never {
    if !settleDone { Thread.sleep(forTimeInterval: settle) }
    let after = Snapshot()
    let perConn = Double(after.rss - before.rss) / Double(count)
    let heapPer = Double(after.heap - before.heap) / Double(count)
    print(
        "mode=\(mode) threads=\(threads) n=\(count) rss_before_kb=\(before.rss) rss_after_kb=\(after.rss) "
            + "heap_before=\(before.heap) heap_after=\(after.heap) "
            + "tcp_inuse=\(before.tcp.inuse)->\(after.tcp.inuse) tcp_mem_pages=\(before.tcp.memPages)->\(after.tcp.memPages) "
            + "slab_kb=\(before.slab)->\(after.slab) "
            + String(format: "kb_per_conn=%.3f heap_bytes_per_conn=%.0f", perConn, heapPer)
    )
    fflush(stdout)
    exit(0)
}

func signalReady() {
    print("listening port=\(port) pid=\(getpid()) rss_kb=\(before.rss)")
    fflush(stdout)
}

// MARK: SwiftNIO modes

/// About what a logged-in idle client needs: ids, user/database references, a parameters reference, counters.
final class IdleClientHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    var clientID: UInt64 = 0
    var processID: Int32 = 0
    var secretKey: Int32 = 0
    var user: String = ""  // shared with every client of the same user (refcounted)
    var database: String = ""
    var parameters: [String: String] = [:]  // shared empty storage until set
    var state: UInt8 = 0
    var counters: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0)
    var more: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) =
        (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    let turnOffAutoRead: Bool

    init(id: UInt64, user: String, database: String, turnOffAutoRead: Bool) {
        self.clientID = id
        self.user = user
        self.database = database
        self.turnOffAutoRead = turnOffAutoRead
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // Consume and drop what the client sent (a StartupMessage in the client driver).
        _ = self.unwrapInboundIn(data)
        self.state = 1
        if self.turnOffAutoRead {
            try? context.channel.syncOptions?.setOption(ChannelOptions.autoRead, value: false)
        }
    }
}

func runNIO() {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
    let accepted = NIOLockedValueBox(0)
    let sharedUser = "bench_user"
    let sharedDB = "bench_db"
    var bootstrap = ServerBootstrap(group: group)
        .serverChannelOption(ChannelOptions.backlog, value: 4096)
        .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
    switch mode {
    case "nio-bare":
        bootstrap = bootstrap.childChannelInitializer { channel in
            accepted.withLockedValue { $0 += 1 }
            return channel.eventLoop.makeSucceededVoidFuture()
        }
    case "nio-handler", "nio-small", "nio-lgalloc":
        let small = mode == "nio-small"
        if mode == "nio-lgalloc" {
            bootstrap = bootstrap.childChannelOption(
                ChannelOptions.recvAllocator,
                value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 256, maximum: 65536)
            )
        }
        if small {
            bootstrap =
                bootstrap
                .childChannelOption(ChannelOptions.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: 64))
                .childChannelOption(ChannelOptions.maxMessagesPerRead, value: 1)
        }
        bootstrap = bootstrap.childChannelInitializer { channel in
            let id = accepted.withLockedValue {
                $0 += 1
                return $0
            }
            let handler = IdleClientHandler(
                id: UInt64(id),
                user: sharedUser,
                database: sharedDB,
                turnOffAutoRead: small
            )
            return channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(handler)
            }
        }
    default:
        fatalError("unknown mode \(mode)")
    }
    _ = try! bootstrap.bind(host: "127.0.0.1", port: port).wait()
    before = Snapshot()
    signalReady()
    while true {
        let c = accepted.withLockedValue { $0 }
        if c >= n { report(c) }
        usleep(50_000)
    }
}

// MARK: raw epoll

struct IdleConn {
    var fd: Int32
    var state: UInt8
    var buffer: UnsafeMutableRawPointer?  // 64 bytes, allocated on the first read
    var record: IdleClientHandler?  // epoll-record only
}

func runEpoll() {
    let withRecord = mode == "epoll-record"
    let sharedUser = "bench_user"
    let sharedDB = "bench_db"
    let lfd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
    precondition(lfd >= 0)
    var one: Int32 = 1
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = in_port_t(UInt16(port).bigEndian)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    let rc = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(lfd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
    }
    precondition(rc == 0, "bind: \(errno)")
    precondition(listen(lfd, 4096) == 0)
    let ep = idle_epoll_create()
    precondition(idle_epoll_add(ep, lfd, UInt64(UInt32.max)) == 0)

    var conns: [IdleConn] = []  // index = slot, epoll data = slot
    var open = 0
    var deadline: Date? = nil
    var tags = [UInt64](repeating: 0, count: 256)
    before = Snapshot()
    signalReady()
    while true {
        let k = idle_epoll_wait(ep, &tags, Int32(tags.count), 50)
        if k < 0 { continue }
        for i in 0..<Int(k) {
            let tag = tags[i]
            if tag == UInt64(UInt32.max) {
                while true {
                    let cfd = idle_accept(lfd)
                    if cfd < 0 { break }
                    let record =
                        withRecord
                        ? IdleClientHandler(
                            id: UInt64(conns.count),
                            user: sharedUser,
                            database: sharedDB,
                            turnOffAutoRead: false
                        ) : nil
                    conns.append(IdleConn(fd: cfd, state: 0, buffer: nil, record: record))
                    _ = idle_epoll_add(ep, cfd, UInt64(conns.count - 1))
                    open += 1
                }
            } else {
                let slot = Int(tag)
                if conns[slot].buffer == nil { conns[slot].buffer = malloc(64) }
                let r = read(conns[slot].fd, conns[slot].buffer, 64)
                if r == 0 || (r < 0 && errno != EAGAIN) {
                    close(conns[slot].fd)
                    free(conns[slot].buffer)
                    conns[slot] = IdleConn(fd: -1, state: 0, buffer: nil, record: nil)
                    open -= 1
                } else if r > 0 {
                    conns[slot].state = 1
                }
            }
        }
        if open >= n {
            // Keep serving reads for SETTLE seconds so that clients that spoke have their buffer, then report.
            if deadline == nil { deadline = Date().addingTimeInterval(settle) }
            if Date() >= deadline! {
                settleDone = true
                report(open)
            }
        }
    }
}

if mode.hasPrefix("epoll") { runEpoll() } else { runNIO() }
