/* gateway/sigv2.h - AWS Signature Version 2 (legacy S3 auth: header and
 * presigned query forms). Private to gateway/. */
#ifndef GW_SIGV2_H
#define GW_SIGV2_H

#include "gateway/gw_int.h"

/* True if the request carries a SigV2 credential (header "AWS AK:sig", or
 * AWSAccessKeyId + Signature in the query). */
bool gw_sigv2_present(gw_req *r);
/* Finds the secret of access key ak into secret[secret_n]; false with the
 * S3 error set on r (unknown or disabled key). */
typedef bool (*gw_secret_lookup_fn)(gw_req *r, const char *ak, char *secret, size_t secret_n);
/* Verifies it (date skew / expiry, secret lookup, HMAC-SHA1 in constant
 * time). 0, or -1 with the S3 error set on r. The payload is unsigned.
 * secret is scratch space the caller wipes. */
int gw_sigv2_auth(gw_req *r, gw_secret_lookup_fn lookup, char *secret, size_t secret_n);

#endif
