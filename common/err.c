/* common/err.c - messages for the project's internal error codes (err.def). */
#include "common/cm.h"

const char *cm_strerror(int err)
{
    switch (err) {
    case 0:
        return "ok";
#define ERR(name, msg)                                                                             \
    case CM_E##name:                                                                               \
        return msg;
#define ERR_FIRST(name, msg) ERR(name, msg)
#include "common/err.def"
#undef ERR
#undef ERR_FIRST
    }
    return "unknown error";
}
