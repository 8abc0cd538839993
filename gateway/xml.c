/* gateway/xml.c - S3 XML: the response writer (straight into a cm_buf, no
 * libxml2) and the request-body parser (libxml2 -> a tiny gw_xnode tree).
 * The ONLY file that includes libxml2 headers. Bodies with a DTD are
 * rejected before any entity is declared, so nothing is ever expanded. */
#include "gateway/gw_int.h"
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <pthread.h>

/* ----------------------------------------------------------------- writer */

#define S3_XMLNS "http://s3.amazonaws.com/doc/2006-03-01/"

void gw_xml_start(cm_buf *b, const char *root)
{
    cm_buf_append_str(b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<");
    cm_buf_append_str(b, root);
    cm_buf_append_str(b, " xmlns=\"" S3_XMLNS "\">");
}

void gw_xml_open(cm_buf *b, const char *name)
{
    size_t n = strlen(name);
    if (cm_buf_reserve(b, n + 2))
        return;
    b->p[b->n++] = '<';
    memcpy(b->p + b->n, name, n);
    b->n += n;
    b->p[b->n++] = '>';
    b->p[b->n] = 0;
}

void gw_xml_close(cm_buf *b, const char *name)
{
    size_t n = strlen(name);
    if (cm_buf_reserve(b, n + 3))
        return;
    b->p[b->n++] = '<';
    b->p[b->n++] = '/';
    memcpy(b->p + b->n, name, n);
    b->n += n;
    b->p[b->n++] = '>';
    b->p[b->n] = 0;
}

/* Escape table: 0 = copy as is, 1 = named entity, 2 = numeric reference.
 * Control characters are not allowed in XML 1.0 documents; AWS writes them
 * as numeric references, and so do we. CR is written as &#xD; too: a
 * literal CR would be folded into LF by every conforming parser. */
static uint8_t esc_class(uint8_t c)
{
    if (c < 0x20)
        return (c == '\t' || c == '\n') ? 0 : 2;
    if (c == '&' || c == '<' || c == '>' || c == '"' || c == '\'')
        return 1;
    return 0;
}

void gw_xml_escape(cm_buf *b, cm_slice text)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t i = 0;

    while (i < text.n) {
        size_t run = i;
        while (run < text.n && esc_class(text.p[run]) == 0)
            run++;
        if (run > i && cm_buf_append(b, text.p + i, run - i))
            return;
        if (run == text.n)
            break;
        uint8_t c = text.p[run];
        const char *ent = NULL;
        char num[8];
        switch (c) {
        case '&': ent = "&amp;"; break;
        case '<': ent = "&lt;"; break;
        case '>': ent = "&gt;"; break;
        case '"': ent = "&quot;"; break;
        case '\'': ent = "&apos;"; break;
        default:
            /* "&#x1;" or "&#x1F;" */
            num[0] = '&';
            num[1] = '#';
            num[2] = 'x';
            if (c >= 16) {
                num[3] = hex[c >> 4];
                num[4] = hex[c & 15];
                num[5] = ';';
                num[6] = 0;
            } else {
                num[3] = hex[c];
                num[4] = ';';
                num[5] = 0;
            }
            ent = num;
            break;
        }
        if (cm_buf_append_str(b, ent))
            return;
        i = run + 1;
    }
    if (b->p == NULL)
        cm_buf_append(b, "", 0); /* keep the "always NUL-terminated" promise */
}

void gw_xml_elem_slice(cm_buf *b, const char *name, cm_slice text)
{
    gw_xml_open(b, name);
    gw_xml_escape(b, text);
    gw_xml_close(b, name);
}

void gw_xml_elem(cm_buf *b, const char *name, const char *text)
{
    gw_xml_elem_slice(b, name, text ? CM_SLICE_STR(text) : CM_SLICE_NULL);
}

void gw_xml_elem_u64(cm_buf *b, const char *name, uint64_t v)
{
    gw_xml_open(b, name);
    cm_buf_printf(b, "%llu", (unsigned long long)v);
    gw_xml_close(b, name);
}

void gw_xml_elem_time(cm_buf *b, const char *name, int64_t ms)
{
    char t[32];
    cm_time_iso8601_ms(ms < 0 ? 0 : ms, t);
    gw_xml_open(b, name);
    cm_buf_append_str(b, t);
    gw_xml_close(b, name);
}

void gw_xml_owner(gw_req *r, cm_buf *b, const char *elem)
{
    gw_xml_open(b, elem);
    gw_xml_elem(b, "ID", r->srv->owner_id);
    gw_xml_elem(b, "DisplayName", r->srv->owner_name);
    gw_xml_close(b, elem);
}

/* ----------------------------------------------------------------- parser */

/* The document handle is the arena its nodes live in. */
struct xdoc {
    cm_pool *pool;
    bool has_dtd;   /* set by the internalSubset SAX hook: reject */
};

static pthread_once_t xml_once = PTHREAD_ONCE_INIT;

static void xml_init(void)
{
    xmlInitParser(); /* not thread-safe itself: run it once */
}

/* Silences libxml2's default of printing errors to stderr. */
static void xml_quiet(void *ctx, const char *msg, ...)
{
    (void)ctx;
    (void)msg;
}

/* Called at "<!DOCTYPE name ...": before the internal subset (and so before
 * any entity declaration) is parsed. Stops the parser right there. */
static void on_doctype(void *ctx, const xmlChar *name, const xmlChar *ext, const xmlChar *sys)
{
    (void)name;
    (void)ext;
    (void)sys;
    xmlParserCtxtPtr c = ctx;
    struct xdoc *d = c->_private;
    d->has_dtd = true;
    xmlStopParser(c);
}

/* Appends the text and CDATA children of x to out. */
static int collect_text(xmlNodePtr x, cm_buf *out)
{
    for (xmlNodePtr c = x->children; c; c = c->next) {
        if ((c->type == XML_TEXT_NODE || c->type == XML_CDATA_SECTION_NODE) && c->content) {
            if (cm_buf_append_str(out, (const char *)c->content))
                return CM_ENOMEM;
        }
    }
    return 0;
}

/* Copies the element x (and its element children) into the arena.
 * Returns NULL on OOM or on anything we refuse (entity references). */
static gw_xnode *copy_tree(struct xdoc *d, xmlNodePtr x, int depth)
{
    if (depth > 64)
        return NULL;
    gw_xnode *n = cm_pool_alloc(d->pool, sizeof *n);
    if (!n)
        return NULL;
    const char *name = (const char *)x->name;
    n->name = cm_pool_strndup(d->pool, name, strlen(name));
    if (!n->name)
        return NULL;

    cm_buf t = {0};
    if (collect_text(x, &t)) {
        cm_buf_free(&t);
        return NULL;
    }
    uint8_t *tp = cm_pool_alloc(d->pool, t.n + 1);
    if (!tp) {
        cm_buf_free(&t);
        return NULL;
    }
    if (t.n)
        memcpy(tp, t.p, t.n);
    n->text = CM_SLICE(tp, t.n);
    cm_buf_free(&t);

    gw_xnode **tail = &n->child;
    for (xmlNodePtr c = x->children; c; c = c->next) {
        if (c->type == XML_ENTITY_REF_NODE || c->type == XML_ENTITY_NODE ||
            c->type == XML_DTD_NODE)
            return NULL;
        if (c->type != XML_ELEMENT_NODE)
            continue;
        gw_xnode *k = copy_tree(d, c, depth + 1);
        if (!k)
            return NULL;
        *tail = k;
        tail = &k->next;
    }
    return n;
}

gw_xnode *gw_xml_parse(cm_slice body, void **doc_out)
{
    *doc_out = NULL;
    if (body.n == 0 || body.n > GW_XML_MAX)
        return NULL;
    pthread_once(&xml_once, xml_init);

    struct xdoc *d = NULL;
    cm_pool *pool = cm_pool_new();
    if (!pool)
        return NULL;
    d = cm_pool_alloc(pool, sizeof *d);
    if (!d) {
        cm_pool_free(pool);
        return NULL;
    }
    d->pool = pool;

    xmlParserCtxtPtr ctxt = xmlNewParserCtxt();
    if (!ctxt) {
        cm_pool_free(pool);
        return NULL;
    }
    ctxt->_private = d;
    ctxt->sax->internalSubset = on_doctype;
    ctxt->sax->externalSubset = NULL;
    ctxt->sax->error = xml_quiet;
    ctxt->sax->warning = xml_quiet;
    ctxt->sax->serror = NULL;

    /* No XML_PARSE_NOENT (entities would be substituted), no DTDLOAD. */
    int opts = XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING | XML_PARSE_NOCDATA;
    xmlDocPtr doc = xmlCtxtReadMemory(ctxt, (const char *)body.p, (int)body.n, NULL, NULL, opts);
    bool bad = d->has_dtd || !ctxt->wellFormed || !doc;
    xmlFreeParserCtxt(ctxt);

    gw_xnode *root = NULL;
    if (!bad && !doc->intSubset && !doc->extSubset) {
        xmlNodePtr x = xmlDocGetRootElement(doc);
        if (x)
            root = copy_tree(d, x, 0);
    }
    if (doc)
        xmlFreeDoc(doc);
    if (!root) {
        cm_pool_free(pool);
        return NULL;
    }
    *doc_out = d;
    return root;
}

void gw_xml_doc_free(void *doc)
{
    struct xdoc *d = doc;
    if (d)
        cm_pool_free(d->pool); /* d lives in its own pool */
}

gw_xnode *gw_xml_child(gw_xnode *n, const char *name)
{
    if (!n)
        return NULL;
    for (gw_xnode *c = n->child; c; c = c->next)
        if (strcmp(c->name, name) == 0)
            return c;
    return NULL;
}
