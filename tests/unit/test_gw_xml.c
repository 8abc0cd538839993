/* tests/unit/test_gw_xml.c - gateway/xml.c: the response writer against
 * golden strings (escaping, control characters, UTF-8 pass-through) and the
 * request parser on CompleteMultipartUpload and Delete bodies, malformed
 * input, and entity attacks (DTDs are refused, nothing is expanded). */
#include "gateway/gw_int.h"
#include "tests/unit/tap.h"
#include <stdlib.h>

/* Runs fn on a fresh buffer and compares the result with want. */
static void is_buf(const cm_buf *b, const char *want, const char *name)
{
    is_str(cm_buf_str(b), want, "%s", name);
    ok(b->n == strlen(want), "%s: length", name);
}

static void test_writer(void)
{
    cm_buf b = {0};

    gw_xml_start(&b, "ListBucketResult");
    is_buf(&b,
           "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
           "<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">",
           "start");
    cm_buf_reset(&b);

    gw_xml_open(&b, "Contents");
    gw_xml_elem(&b, "Key", "a&b<c>d\"e'f");
    gw_xml_elem_u64(&b, "Size", 18446744073709551615ull);
    gw_xml_elem(&b, "Empty", "");
    gw_xml_elem(&b, "Null", NULL);
    gw_xml_close(&b, "Contents");
    is_buf(&b,
           "<Contents><Key>a&amp;b&lt;c&gt;d&quot;e&apos;f</Key>"
           "<Size>18446744073709551615</Size><Empty></Empty><Null></Null></Contents>",
           "elements and named entities");
    cm_buf_reset(&b);

    /* Control characters, with an embedded NUL: binary-safe slices. */
    static const uint8_t ctl[] = {'a', 0x00, 0x01, '\t', '\n', '\r', 0x1f, 0x7f, 'z'};
    gw_xml_escape(&b, CM_SLICE(ctl, sizeof ctl));
    is_str(cm_buf_str(&b), "a&#x0;&#x1;\t\n&#xD;&#x1F;\x7fz", "control characters");
    cm_buf_reset(&b);

    /* UTF-8 passes through untouched. */
    gw_xml_elem(&b, "Key", "caf\xc3\xa9/\xe6\x97\xa5\xe6\x9c\xac/\xf0\x9f\x98\x80 +%2F");
    is_buf(&b, "<Key>caf\xc3\xa9/\xe6\x97\xa5\xe6\x9c\xac/\xf0\x9f\x98\x80 +%2F</Key>",
           "UTF-8 and URL-ish bytes unchanged");
    cm_buf_reset(&b);

    /* Quoted ETag, as listings write it. */
    gw_xml_elem(&b, "ETag", "\"9b2cf535f27731c974343645a3985328-2\"");
    is_buf(&b, "<ETag>&quot;9b2cf535f27731c974343645a3985328-2&quot;</ETag>", "quoted etag");
    cm_buf_reset(&b);

    gw_xml_elem_time(&b, "LastModified", 1440938160123);
    is_buf(&b, "<LastModified>2015-08-30T12:36:00.123Z</LastModified>", "time with ms");
    cm_buf_reset(&b);

    gw_xml_elem_time(&b, "Initiated", 0);
    is_buf(&b, "<Initiated>1970-01-01T00:00:00.000Z</Initiated>", "epoch");
    cm_buf_reset(&b);

    /* Empty escape on an empty buffer still leaves a C string. */
    cm_buf e = {0};
    gw_xml_escape(&e, CM_SLICE_NULL);
    ok(e.p != NULL && e.n == 0 && e.p[0] == 0, "empty escape leaves a NUL-terminated buffer");
    cm_buf_free(&e);

    /* A long run mixing plain and escaped bytes (exercise the fast path). */
    char big[3000];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (i % 100 == 99) ? '&' : 'x';
    gw_xml_escape(&b, CM_SLICE(big, sizeof big));
    ok(b.n == sizeof big + 30 * 4, "long escape: length %zu", b.n);
    ok(memcmp(b.p + 95, "xxxx&amp;xxxx", 13) == 0, "long escape: content");
    cm_buf_reset(&b);

    /* Owner, with a fake server (gw_xml_owner reads r->srv only). */
    gw_server srv;
    memset(&srv, 0, sizeof srv);
    strcpy(srv.owner_id, "75aa57f09aa0c8caeab4f8c24e99d10f8e7faeebf76c078efc7c6caea54ba06a");
    strcpy(srv.owner_name, "cairn<root>");
    gw_req r;
    memset(&r, 0, sizeof r);
    r.srv = &srv;
    gw_xml_owner(&r, &b, "Owner");
    is_buf(&b,
           "<Owner><ID>75aa57f09aa0c8caeab4f8c24e99d10f8e7faeebf76c078efc7c6caea54ba06a</ID>"
           "<DisplayName>cairn&lt;root&gt;</DisplayName></Owner>",
           "owner");
    cm_buf_free(&b);
}

static gw_xnode *parse(const char *s, void **doc)
{
    return gw_xml_parse(CM_SLICE_STR(s), doc);
}

static void test_parse_complete(void)
{
    void *doc;
    const char *body =
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\n"
        "  <Part>\n    <PartNumber>1</PartNumber>\n"
        "    <ETag>\"a54357aff0632cce46d942af68356b38\"</ETag>\n  </Part>\n"
        "  <Part><ETag>&quot;0c78aef83f66abc1fa1e8477f296d394&quot;</ETag>"
        "<PartNumber>2</PartNumber><ChecksumCRC32>AAAAAA==</ChecksumCRC32></Part>\n"
        "</CompleteMultipartUpload>";
    gw_xnode *root = parse(body, &doc);
    ok(root != NULL && doc != NULL, "complete: parsed");
    if (!root)
        return;
    is_str(root->name, "CompleteMultipartUpload", "complete: root local name");
    int nparts = 0;
    for (gw_xnode *p = root->child; p; p = p->next)
        if (strcmp(p->name, "Part") == 0)
            nparts++;
    is_int(nparts, 2, "complete: two parts");
    gw_xnode *p1 = gw_xml_child(root, "Part");
    gw_xnode *n1 = gw_xml_child(p1, "PartNumber");
    gw_xnode *e1 = gw_xml_child(p1, "ETag");
    ok(n1 && cm_slice_eq_str(n1->text, "1"), "complete: part 1 number");
    ok(e1 && cm_slice_eq_str(e1->text, "\"a54357aff0632cce46d942af68356b38\""),
       "complete: part 1 etag keeps its quotes");
    gw_xnode *p2 = p1->next;
    ok(p2 && strcmp(p2->name, "Part") == 0, "complete: sibling");
    gw_xnode *e2 = gw_xml_child(p2, "ETag");
    ok(e2 && cm_slice_eq_str(e2->text, "\"0c78aef83f66abc1fa1e8477f296d394\""),
       "complete: &quot; decoded");
    gw_xnode *c2 = gw_xml_child(p2, "ChecksumCRC32");
    ok(c2 && cm_slice_eq_str(c2->text, "AAAAAA=="), "complete: checksum");
    ok(gw_xml_child(p2, "Nope") == NULL, "complete: missing child is NULL");
    ok(gw_xml_child(NULL, "Part") == NULL, "child of NULL is NULL");
    gw_xml_doc_free(doc);

    /* No namespace, no declaration. */
    root = parse("<CompleteMultipartUpload><Part><PartNumber>7</PartNumber><ETag>x</ETag>"
                 "</Part></CompleteMultipartUpload>",
                 &doc);
    ok(root && strcmp(root->name, "CompleteMultipartUpload") == 0, "no xmlns: parsed");
    ok(root && cm_slice_eq_str(gw_xml_child(gw_xml_child(root, "Part"), "PartNumber")->text,
                               "7"),
       "no xmlns: part number");
    gw_xml_doc_free(doc);

    /* Prefixed namespace: local names only. */
    root = parse("<s3:CompleteMultipartUpload xmlns:s3=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
                 "<s3:Part><s3:PartNumber>3</s3:PartNumber></s3:Part>"
                 "</s3:CompleteMultipartUpload>",
                 &doc);
    ok(root && strcmp(root->name, "CompleteMultipartUpload") == 0, "prefixed: local name");
    ok(root && gw_xml_child(root, "Part") &&
           cm_slice_eq_str(gw_xml_child(gw_xml_child(root, "Part"), "PartNumber")->text, "3"),
       "prefixed: child by local name");
    gw_xml_doc_free(doc);
}

static void test_parse_delete(void)
{
    void *doc;
    const char *body =
        "<Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Quiet>true</Quiet>"
        "<Object><Key>a&amp;b &lt;c&gt; caf\xc3\xa9</Key></Object>"
        "<Object><Key><![CDATA[x<y>&z]]></Key><VersionId>null</VersionId></Object>"
        "<Object><Key>one&#x20;two&#10;three</Key></Object>"
        "<Object><Key>pre<!-- comment -->post</Key></Object>"
        "</Delete>";
    gw_xnode *root = parse(body, &doc);
    ok(root != NULL, "delete: parsed");
    if (!root)
        return;
    gw_xnode *q = gw_xml_child(root, "Quiet");
    ok(q && cm_slice_eq_str(q->text, "true"), "delete: quiet");
    const char *want[] = {"a&b <c> caf\xc3\xa9", "x<y>&z", "one two\nthree", "prepost"};
    int i = 0;
    for (gw_xnode *o = root->child; o; o = o->next) {
        if (strcmp(o->name, "Object"))
            continue;
        gw_xnode *k = gw_xml_child(o, "Key");
        ok(i < 4 && k && cm_slice_eq_str(k->text, want[i]), "delete: key %d", i);
        i++;
    }
    is_int(i, 4, "delete: four objects");
    gw_xml_doc_free(doc);
}

static void test_parse_bad(void)
{
    void *doc = (void *)1;
    static const char *bad[] = {
        "",
        "not xml",
        "<Delete><Object><Key>a</Object></Delete>",
        "<Delete></Delete><Delete></Delete>",
        "<Delete><Key>a &foo; b</Key></Delete>",
        "<Delete><Key>\x01</Key></Delete>",
        "<Delete><Key>&#x1;</Key></Delete>",
        "<?xml version=\"1.0\"?>",
        "<Delete",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        doc = (void *)1;
        ok(parse(bad[i], &doc) == NULL && doc == NULL, "malformed %zu rejected", i);
    }

    /* Billion laughs: must be refused quickly without expanding. */
    const char *lol =
        "<?xml version=\"1.0\"?>\n"
        "<!DOCTYPE lolz [\n"
        " <!ENTITY lol \"lol\">\n"
        " <!ENTITY lol1 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">\n"
        " <!ENTITY lol2 \"&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;\">\n"
        " <!ENTITY lol3 \"&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;\">\n"
        " <!ENTITY lol4 \"&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;\">\n"
        " <!ENTITY lol5 \"&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;\">\n"
        " <!ENTITY lol6 \"&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;\">\n"
        " <!ENTITY lol7 \"&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;\">\n"
        " <!ENTITY lol8 \"&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;\">\n"
        " <!ENTITY lol9 \"&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;\">\n"
        "]>\n"
        "<Delete><Object><Key>&lol9;</Key></Object></Delete>";
    uint64_t t0 = cm_mono_ns();
    doc = (void *)1;
    ok(parse(lol, &doc) == NULL && doc == NULL, "billion laughs rejected");
    ok(cm_mono_ns() - t0 < 1000000000ull, "billion laughs: no expansion (fast)");

    /* External entity (XXE): refused, the file is never read. */
    const char *xxe = "<?xml version=\"1.0\"?>\n"
                      "<!DOCTYPE d [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>\n"
                      "<Delete><Object><Key>&x;</Key></Object></Delete>";
    doc = (void *)1;
    ok(parse(xxe, &doc) == NULL && doc == NULL, "external entity rejected");

    /* External DTD reference, no internal subset. */
    const char *ext = "<?xml version=\"1.0\"?>\n"
                      "<!DOCTYPE Delete SYSTEM \"http://127.0.0.1:1/x.dtd\">\n"
                      "<Delete><Object><Key>k</Key></Object></Delete>";
    doc = (void *)1;
    ok(parse(ext, &doc) == NULL && doc == NULL, "external DTD rejected");

    /* Parameter entities. */
    const char *pe = "<!DOCTYPE d [<!ENTITY % p SYSTEM \"file:///etc/passwd\"> %p;]><d/>";
    doc = (void *)1;
    ok(parse(pe, &doc) == NULL && doc == NULL, "parameter entity rejected");

    /* Deep nesting does not blow the stack. */
    cm_buf deep = {0};
    for (int i = 0; i < 5000; i++)
        cm_buf_append_str(&deep, "<a>");
    for (int i = 0; i < 5000; i++)
        cm_buf_append_str(&deep, "</a>");
    doc = (void *)1;
    ok(gw_xml_parse(cm_buf_slice(&deep), &doc) == NULL && doc == NULL, "deep nesting rejected");
    cm_buf_free(&deep);

    /* Bodies larger than GW_XML_MAX are refused outright. */
    size_t n = GW_XML_MAX + 1;
    char *huge = malloc(n);
    memset(huge, ' ', n);
    memcpy(huge, "<a>", 3);
    memcpy(huge + n - 4, "</a>", 4);
    doc = (void *)1;
    ok(gw_xml_parse(CM_SLICE(huge, n), &doc) == NULL && doc == NULL, "oversized body rejected");
    free(huge);

    gw_xml_doc_free(NULL);
    ok(1, "doc_free(NULL) is a no-op");
}

static void test_roundtrip(void)
{
    /* Whatever the writer escapes (control characters aside), the parser
     * reads back byte for byte. */
    static const char *keys[] = {"plain", "&+-\xc3\xa9\"", "a b/c%2Fd", "<>'\"&amp;", "\t\n"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        cm_buf b = {0};
        gw_xml_start(&b, "Delete");
        gw_xml_open(&b, "Object");
        gw_xml_elem(&b, "Key", keys[i]);
        gw_xml_close(&b, "Object");
        gw_xml_close(&b, "Delete");
        void *doc;
        gw_xnode *root = gw_xml_parse(cm_buf_slice(&b), &doc);
        gw_xnode *k = gw_xml_child(gw_xml_child(root, "Object"), "Key");
        ok(k && cm_slice_eq_str(k->text, keys[i]), "round trip %zu", i);
        gw_xml_doc_free(doc);
        cm_buf_free(&b);
    }
    /* CR survives as &#xD; (a literal CR would become LF). */
    cm_buf b = {0};
    gw_xml_elem(&b, "Key", "a\rb");
    void *doc;
    gw_xnode *k = gw_xml_parse(cm_buf_slice(&b), &doc);
    ok(k && cm_slice_eq_str(k->text, "a\rb"), "round trip CR");
    gw_xml_doc_free(doc);
    cm_buf_free(&b);
}

int main(void)
{
    test_writer();
    test_parse_complete();
    test_parse_delete();
    test_parse_bad();
    test_roundtrip();
    return done_testing();
}
