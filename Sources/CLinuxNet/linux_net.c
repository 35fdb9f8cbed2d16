#define _GNU_SOURCE
#include "CLinuxNet.h"

#include <errno.h>
#include <sched.h>
#include <sys/uio.h>
#include <fcntl.h>
#include <unistd.h>
#include <string.h>
#include <linux/netfilter_ipv4.h>
#include <linux/netfilter_ipv6/ip6_tables.h>

int clinuxnet_setns_net(int fd) { return setns(fd, CLONE_NEWNET); }

int clinuxnet_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }

int clinuxnet_clone_newnet(void) { return CLONE_NEWNET; }

int clinuxnet_original_destination(int fd, int ipv6, struct sockaddr_storage *address) {
    memset(address, 0, sizeof(*address));
    socklen_t length = ipv6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (ipv6) {
        return getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, address, &length);
    }
    return getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, address, &length);
}

int clinuxnet_so_mark(void) { return SO_MARK; }
int clinuxnet_so_reuseport(void) { return SO_REUSEPORT; }
int clinuxnet_ip_transparent(void) { return IP_TRANSPARENT; }
int clinuxnet_ipv6_transparent(void) { return IPV6_TRANSPARENT; }
int clinuxnet_ip_freebind(void) { return IP_FREEBIND; }
int clinuxnet_ipv6_freebind(void) { return IPV6_FREEBIND; }
int clinuxnet_ip_bind_address_no_port(void) { return IP_BIND_ADDRESS_NO_PORT; }

long clinuxnet_send_with_fd(int socket, const void *buffer, unsigned long length, int fd) {
    struct iovec vector = { .iov_base = (void *)buffer, .iov_len = length };
    struct msghdr message;
    memset(&message, 0, sizeof(message));
    message.msg_iov = &vector;
    message.msg_iovlen = 1;
    char control[CMSG_SPACE(sizeof(int))];
    if (fd >= 0) {
        memset(control, 0, sizeof(control));
        message.msg_control = control;
        message.msg_controllen = sizeof(control);
        struct cmsghdr *header = CMSG_FIRSTHDR(&message);
        header->cmsg_level = SOL_SOCKET;
        header->cmsg_type = SCM_RIGHTS;
        header->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(header), &fd, sizeof(int));
    }
    return sendmsg(socket, &message, MSG_NOSIGNAL);
}

long clinuxnet_receive_with_fds(int socket, void *buffer, unsigned long capacity, int *fds, int max_fds,
                                int *fd_count, int *truncated) {
    struct iovec vector = { .iov_base = buffer, .iov_len = capacity };
    struct msghdr message;
    memset(&message, 0, sizeof(message));
    message.msg_iov = &vector;
    message.msg_iovlen = 1;
    char control[CMSG_SPACE(sizeof(int) * 8)];
    message.msg_control = control;
    message.msg_controllen = sizeof(control);
    *fd_count = 0;
    *truncated = 0;
    long received = recvmsg(socket, &message, MSG_CMSG_CLOEXEC);
    if (received < 0) return received;
    if (message.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) *truncated = 1;
    for (struct cmsghdr *header = CMSG_FIRSTHDR(&message); header; header = CMSG_NXTHDR(&message, header)) {
        if (header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS) continue;
        int count = (int)((header->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        int *data = (int *)CMSG_DATA(header);
        for (int i = 0; i < count; i++) {
            if (*fd_count < max_fds) {
                fds[(*fd_count)++] = data[i];
            } else {
                close(data[i]);
                *truncated = 1;
            }
        }
    }
    return received;
}
