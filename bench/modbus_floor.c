/*
 * The speed floor for bench_modbus.py: a libmodbus TCP server answering from one
 * single-threaded select() loop, so the benchmark can print "gateway / libmodbus" measured
 * with the same client in the same run.
 *
 * Holding and input registers 0..999 read as their address (holding) or 10000 + address
 * (input). Build (Debian: apt-get install libmodbus-dev):
 *   cc -O2 -Wall -o modbus_floor modbus_floor.c $(pkg-config --cflags --libs libmodbus)
 * Run: modbus_floor PORT   (listens on 127.0.0.1; prints READY when listening; stops on
 * SIGTERM or when its stdin closes)
 */
#include <errno.h>
#include <modbus.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <unistd.h>

#define REGISTERS 1000

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        return 2;
    }
    modbus_t *ctx = modbus_new_tcp("127.0.0.1", atoi(argv[1]));
    modbus_mapping_t *map = modbus_mapping_new(REGISTERS, REGISTERS, REGISTERS, REGISTERS);
    if (ctx == NULL || map == NULL) {
        fprintf(stderr, "modbus_floor: out of memory\n");
        return 1;
    }
    for (int i = 0; i < REGISTERS; i++) {
        map->tab_registers[i] = (uint16_t)i;
        map->tab_input_registers[i] = (uint16_t)(10000 + i);
    }
    int listener = modbus_tcp_listen(ctx, 16);
    if (listener < 0) {
        fprintf(stderr, "modbus_floor: listen: %s\n", modbus_strerror(errno));
        return 1;
    }
    printf("READY\n");
    fflush(stdout);

    fd_set all;
    FD_ZERO(&all);
    FD_SET(listener, &all);
    FD_SET(STDIN_FILENO, &all);
    int top = listener > STDIN_FILENO ? listener : STDIN_FILENO;
    uint8_t query[MODBUS_TCP_MAX_ADU_LENGTH];
    for (;;) {
        fd_set ready = all;
        if (select(top + 1, &ready, NULL, NULL, NULL) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (FD_ISSET(STDIN_FILENO, &ready)) {
            char c;
            if (read(STDIN_FILENO, &c, 1) <= 0)
                break; /* the benchmark is done with us */
        }
        for (int fd = 0; fd <= top; fd++) {
            if (fd == STDIN_FILENO || !FD_ISSET(fd, &ready))
                continue;
            if (fd == listener) {
                int client = accept(listener, NULL, NULL);
                if (client >= 0) {
                    FD_SET(client, &all);
                    if (client > top)
                        top = client;
                }
                continue;
            }
            modbus_set_socket(ctx, fd);
            int size = modbus_receive(ctx, query);
            if (size > 0) {
                modbus_reply(ctx, query, size, map);
            } else if (size < 0) {
                close(fd);
                FD_CLR(fd, &all);
            }
        }
    }
    close(listener);
    modbus_mapping_free(map);
    modbus_free(ctx);
    return 0;
}
