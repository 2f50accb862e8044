/* TLS 1.3 record protection (RFC 8446 section 5) for a connection whose
 * handshake OpenSSL finished: the traffic secrets and record counts are
 * handed over, the SSL object is freed, and this carries the records on.
 * Pure: no I/O and no SSL objects; the AEAD and HKDF come from libcrypto's
 * EVP. The per-connection state is the two directions' secrets, keys, IVs
 * and sequence numbers (~210 bytes); cipher contexts are per thread.
 *
 * What it accepts from the peer after the hand-off: application data,
 * close_notify, user_canceled (ignored), and KeyUpdate as the only handshake
 * message, alone and whole in its record. Anything else, any record that
 * fails authentication, and any malformed or oversized record is an error
 * the caller answers by closing. */
#ifndef HERALD_TLS13REC_H
#define HERALD_TLS13REC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

enum tls13rec_suite {
    TLS13REC_AES_128_GCM_SHA256 = 1,
    TLS13REC_AES_256_GCM_SHA384 = 2,
    TLS13REC_CHACHA20_POLY1305_SHA256 = 3,
};

#define TLS13REC_HEADER 5
#define TLS13REC_TAG 16
#define TLS13REC_MAX_PLAIN 16384                         /* 2^14 */
#define TLS13REC_MAX_CIPHER (TLS13REC_MAX_PLAIN + 256)   /* largest length field accepted */
#define TLS13REC_MAX_RECORD (TLS13REC_HEADER + TLS13REC_MAX_CIPHER)
/* What one record we seal adds to its plaintext: header, inner type, tag. */
#define TLS13REC_OVERHEAD (TLS13REC_HEADER + 1 + TLS13REC_TAG)
/* Our write key is replaced (a KeyUpdate of our own) after this many
 * records, well inside AES-GCM's limit of 2^24.5 full records per key
 * (RFC 8446 section 5.5). */
#define TLS13REC_REKEY_AFTER (UINT64_C(1) << 23)

typedef struct tls13rec_dir {
    uint64_t seq;
    uint8_t secret[48]; /* the traffic secret: the next key comes from it (KeyUpdate) */
    uint8_t key[32];
    uint8_t iv[12];
} tls13rec_dir;

typedef struct tls13rec {
    tls13rec_dir rd, wr;
    uint8_t suite; /* enum tls13rec_suite */
} tls13rec;

/* Cipher suite from its TLS code point (0x1301..0x1303); 0 when unsupported. */
int tls13rec_suite_of(uint16_t code);
/* Traffic secret length (hash length) of a suite; 0 when unknown. */
size_t tls13rec_secret_len(int suite);

/* Key and IV from a traffic secret (HKDF-Expand-Label "key" and "iv").
 * key gets the suite's key length (16 or 32). False on a bad suite. */
bool tls13rec_derive(int suite, const uint8_t *secret, uint8_t *key, uint8_t iv[12]);

/* Both directions from their traffic secrets (secret_len bytes each, the
 * suite's hash length) and the number of records already protected with
 * them. False on a bad suite or length, or if derivation failed. */
bool tls13rec_init(tls13rec *r, int suite, const uint8_t *rd_secret, uint64_t rd_seq,
                   const uint8_t *wr_secret, uint64_t wr_seq, size_t secret_len);

/* Next traffic secret of one direction ("traffic upd"), its key and IV, seq 0. */
bool tls13rec_update(const tls13rec *r, tls13rec_dir *d);

/* Seals one record of inner content type `type` from plaintext gathered
 * from iov (exactly len bytes from the start of iov, len <= 2^14) into out,
 * which has room for len + TLS13REC_OVERHEAD. Returns the record's length,
 * 0 on failure (sequence numbers exhausted, crypto error). */
size_t tls13rec_seal(tls13rec *r, uint8_t type, const struct iovec *iov, int n, size_t len,
                     uint8_t *out);

/* Application data records from up to max plaintext bytes gathered from iov
 * into out (cap bytes), split at 2^14; a KeyUpdate of our own is sealed in
 * front when the write key is due (TLS13REC_REKEY_AFTER). Returns the
 * ciphertext length, *taken the plaintext consumed; 0 with *taken 0 on
 * failure or when nothing fits. */
size_t tls13rec_seal_data(tls13rec *r, const struct iovec *iov, int n, size_t max, uint8_t *out,
                          size_t cap, size_t *taken);

/* close_notify alert, and KeyUpdate(update_not_requested) followed by our
 * write key's rotation. out: room for 2 (alert) or 5 (KeyUpdate) +
 * TLS13REC_OVERHEAD. Returns the record's length, 0 on failure. */
size_t tls13rec_seal_close_notify(tls13rec *r, uint8_t *out);
size_t tls13rec_seal_key_update(tls13rec *r, uint8_t *out);

enum tls13rec_kind {
    TLS13REC_DATA = 1,        /* application data: data/len (may be 0 bytes) */
    TLS13REC_CLOSE,           /* close_notify: the peer sends no more */
    TLS13REC_KEY_UPDATE,      /* the read key was rotated; `requested`: we owe a KeyUpdate */
    TLS13REC_IGNORED,         /* user_canceled alert: nothing to do */
};

typedef struct tls13rec_msg {
    int kind;
    bool requested;
    uint8_t *data;
    size_t len;
    size_t need; /* when more bytes are needed: the whole record's length, or the header's */
} tls13rec_msg;

enum {
    TLS13REC_ERR_HEADER = -1,   /* not an application_data record of TLS 1.2's legacy version */
    TLS13REC_ERR_LENGTH = -2,   /* length field too small or above 2^14 + 256 */
    TLS13REC_ERR_DECRYPT = -3,  /* authentication failed (bad_record_mac) */
    TLS13REC_ERR_OVERFLOW = -4, /* inner plaintext above 2^14 + 1 */
    TLS13REC_ERR_TYPE = -5,     /* no or unknown inner content type, or empty alert/handshake */
    TLS13REC_ERR_ALERT = -6,    /* the peer sent an alert other than close_notify, user_canceled */
    TLS13REC_ERR_HANDSHAKE = -7, /* a handshake message other than one whole KeyUpdate */
    TLS13REC_ERR_SEQ = -8,      /* sequence numbers exhausted */
    TLS13REC_ERR_CRYPTO = -9,   /* libcrypto failed (out of memory) */
};

/* Opens the record at the start of buf (n bytes): decrypts in place and
 * returns how many bytes the record took (> 0), with m telling what it
 * carried (m->data points into buf); 0 when buf holds no whole record yet
 * (m->need: the bytes needed, 5 while the header is incomplete); or a
 * TLS13REC_ERR_ code. A KeyUpdate rotates the read key here; the caller
 * answers update_requested with tls13rec_seal_key_update. */
long tls13rec_open(tls13rec *r, uint8_t *buf, size_t n, tls13rec_msg *m);

/* Wipes the secrets and keys. */
void tls13rec_wipe(tls13rec *r);

#endif
