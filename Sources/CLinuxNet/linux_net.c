#define _GNU_SOURCE
#include "CLinuxNet.h"

#include <errno.h>
#include <sched.h>
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
