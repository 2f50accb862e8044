/* How tls13rec.c should hold its EVP_CIPHER_CTX (issue 10): one per thread,
 * re-keyed for every record (what it does), or one created and freed per
 * record (nothing kept at all). Seals N records of SIZE bytes each way with
 * AES-128-GCM and prints ns per record. Not part of herald's build:
 *   make -C bench/tls13rec run */
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static int seal(EVP_CIPHER_CTX *c, const EVP_CIPHER *cipher, const unsigned char *key,
                const unsigned char *iv, const unsigned char *in, int n, unsigned char *out)
{
    int ol, fl;
    return EVP_CipherInit_ex(c, cipher, NULL, key, iv, 1) == 1 &&
           EVP_CipherUpdate(c, NULL, &ol, in, 5) == 1 && EVP_CipherUpdate(c, out, &ol, in, n) == 1 &&
           EVP_CipherFinal_ex(c, out + ol, &fl) == 1 &&
           EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, 16, out + n) == 1;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 200000, size = argc > 2 ? atoi(argv[2]) : 128;
    EVP_CIPHER *cipher = EVP_CIPHER_fetch(NULL, "AES-128-GCM", NULL);
    unsigned char key[16] = {1}, iv[12] = {2}, *in = calloc(1, size + 5), *out = malloc(size + 32);
    EVP_CIPHER_CTX *kept = EVP_CIPHER_CTX_new();
    EVP_CipherInit_ex(kept, cipher, NULL, NULL, NULL, 1);
    for (int round = 0; round < 2; round++) {
        double t0 = now();
        for (int i = 0; i < n; i++) {
            iv[11] = (unsigned char)i;
            if (!seal(kept, NULL, key, iv, in, size, out))
                return 1;
        }
        double t1 = now();
        for (int i = 0; i < n; i++) {
            EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
            iv[11] = (unsigned char)i;
            if (!c || !seal(c, cipher, key, iv, in, size, out))
                return 1;
            EVP_CIPHER_CTX_free(c);
        }
        double t2 = now();
        if (round)
            printf("%d-byte records: context per thread %.0f ns/record, context per record %.0f ns/record (%.2fx)\n",
                   size, (t1 - t0) / n * 1e9, (t2 - t1) / n * 1e9, (t2 - t1) / (t1 - t0));
    }
    return 0;
}
