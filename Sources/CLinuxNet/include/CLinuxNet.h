#ifndef SWIFT_HBONE_CLINUXNET_H
#define SWIFT_HBONE_CLINUXNET_H

/// Linux calls and constants Glibc's Swift overlay leaves out (they need _GNU_SOURCE or
/// live in kernel headers): namespace switching and the socket options a transparent proxy
/// uses. Thin wrappers only; all policy is in Swift.

#include <stdint.h>
#include <sys/socket.h>
#include <netinet/in.h>

/// `setns(fd, CLONE_NEWNET)`; returns 0 or -1 with errno set.
int clinuxnet_setns_net(int fd);

/// `pipe2(fds, O_CLOEXEC)`, so no other thread's child inherits the pipe.
int clinuxnet_pipe_cloexec(int fds[2]);

/// `CLONE_NEWNET`.
int clinuxnet_clone_newnet(void);

/// `SO_ORIGINAL_DST` (`linux/netfilter_ipv4.h`) for an IPv4 socket, or
/// `IP6T_SO_ORIGINAL_DST` (`linux/netfilter_ipv6/ip6_tables.h`) for IPv6: the destination
/// before NAT. Writes a `sockaddr_in`/`sockaddr_in6` into `address`; returns 0 or -1.
int clinuxnet_original_destination(int fd, int ipv6, struct sockaddr_storage *address);

/// Constants: `SO_MARK`, `SO_REUSEPORT`, `IP_TRANSPARENT`, `IPV6_TRANSPARENT`,
/// `IP_FREEBIND`, `IPV6_FREEBIND`, `IP_BIND_ADDRESS_NO_PORT`.
int clinuxnet_so_mark(void);
int clinuxnet_so_reuseport(void);
int clinuxnet_ip_transparent(void);
int clinuxnet_ipv6_transparent(void);
int clinuxnet_ip_freebind(void);
int clinuxnet_ipv6_freebind(void);
int clinuxnet_ip_bind_address_no_port(void);

/// `sendmsg` of one datagram with, when `fd >= 0`, exactly that descriptor in an
/// `SCM_RIGHTS` control message (`MSG_NOSIGNAL`). Returns bytes sent or -1 with errno.
long clinuxnet_send_with_fd(int socket, const void *buffer, unsigned long length, int fd);

/// `recvmsg` of one datagram into `buffer` with room for up to `max_fds` descriptors
/// (`MSG_CMSG_CLOEXEC`). Stores the received descriptors in `fds`, their count in
/// `fd_count`, and `MSG_TRUNC`/`MSG_CTRUNC` in `truncated` (1 if either). Returns bytes
/// received (0 at EOF) or -1 with errno.
long clinuxnet_receive_with_fds(int socket, void *buffer, unsigned long capacity, int *fds, int max_fds,
                                int *fd_count, int *truncated);

#endif
