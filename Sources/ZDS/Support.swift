
#if canImport(Glibc)
internal import Glibc
#endif

/// `close(2)`.
@discardableResult
func closeDescriptor(_ descriptor: Int32) -> Int32 { close(descriptor) }
