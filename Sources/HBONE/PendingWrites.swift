internal import NIOCore

extension ChannelHandlerContext {
    /// Flushes, and closes `mode` once every write made so far from this handler has gone
    /// to the socket, or fully at `deadline` (a peer that neither reads nor lets go).
    ///
    /// Writes complete in order, so an empty write's completion marks all before it. NIO
    /// turns a half-close of a socket whose other half is already shut into a full close,
    /// which drops writes still pending in the channel: a pump must not close before this.
    func close(_ mode: CloseMode, afterPendingWrites deadline: TimeAmount?) {
        let channel = self.channel
        let forced = deadline.map { self.eventLoop.scheduleTask(in: $0) { channel.close(promise: nil) } }
        self.writeAndFlush(NIOAny(ByteBuffer())).whenComplete { _ in
            forced?.cancel()
            channel.close(mode: mode, promise: nil)
        }
    }
}
