/*
 * Compiled versions of the SNMP scrape's innermost loops (issue 18: 10,000
 * devices a minute from one exporter process).
 *
 * Each function here does what a pure-Python function next to it does (named
 * in its docstring), for the common, well-formed case only. Whenever the input
 * is anything else (a type it does not expect, a length past the buffer, a tag
 * it does not convert, an OID out of order) it does not guess and does not
 * raise: it says so (None, -1 or an index), and the caller runs the Python
 * version, which is the reference and gives the same result or the same error.
 * So the extension can change speed, never behaviour, and the exporter works
 * without it (it is optional at install time).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdio.h>
#include <string.h>

#define TAG_SEQUENCE 0x30
#define TAG_OID 0x06
#define TAG_INTEGER 0x02
#define TAG_OCTETS 0x04

/* One BER length at buf[*pos + 1] (the tag is at *pos), short or long form of up
 * to 4 octets; moves *pos to the contents. 0 when it cannot be read here. */
static int
read_length(const unsigned char *buf, Py_ssize_t size, Py_ssize_t *pos, Py_ssize_t *length)
{
    Py_ssize_t at = *pos;
    if (at + 1 >= size)
        return 0;
    unsigned int first = buf[at + 1];
    if (first < 0x80) {
        *length = first;
        *pos = at + 2;
        return 1;
    }
    unsigned int count = first & 0x7F;
    if (count == 0 || count > 4 || at + 2 + (Py_ssize_t)count > size)
        return 0;
    Py_ssize_t value = 0;
    for (unsigned int k = 0; k < count; k++)
        value = (value << 8) | buf[at + 2 + k];
    *length = value;
    *pos = at + 2 + count;
    return 1;
}

PyDoc_STRVAR(decode_varbinds_doc,
"decode_varbinds(buf, pos, end) -> list | None\n\n"
"ber.decode_varbinds for bytes: (oid, tag, raw) of each varbind, or None when\n"
"the input is not the well-formed case (the Python version then decides).");

static PyObject *
decode_varbinds(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyBytes_CheckExact(args[0]) || !PyLong_CheckExact(args[1])
        || !PyLong_CheckExact(args[2]))
        Py_RETURN_NONE;
    const unsigned char *buf = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    Py_ssize_t size = PyBytes_GET_SIZE(args[0]);
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    Py_ssize_t end = PyLong_AsSsize_t(args[2]);
    if ((pos == -1 || end == -1) && PyErr_Occurred()) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    if (pos < 0 || end > size || pos > end)
        Py_RETURN_NONE;
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    while (pos < end) {
        Py_ssize_t length, oid_length, value_length;
        if (buf[pos] != TAG_SEQUENCE || !read_length(buf, size, &pos, &length))
            goto fallback;
        Py_ssize_t vb_end = pos + length;
        if (vb_end > end || pos >= size || buf[pos] != TAG_OID
            || !read_length(buf, size, &pos, &oid_length))
            goto fallback;
        Py_ssize_t oid_start = pos;
        pos += oid_length;
        if (pos >= vb_end)
            goto fallback;
        unsigned char tag = buf[pos];
        if (!read_length(buf, size, &pos, &value_length) || pos + value_length != vb_end)
            goto fallback;
        PyObject *oid = PyBytes_FromStringAndSize((const char *)buf + oid_start, oid_length);
        PyObject *raw = PyBytes_FromStringAndSize((const char *)buf + pos, value_length);
        PyObject *number = PyLong_FromLong(tag);
        PyObject *item = (oid && raw && number) ? PyTuple_Pack(3, oid, number, raw) : NULL;
        Py_XDECREF(oid);
        Py_XDECREF(raw);
        Py_XDECREF(number);
        if (item == NULL || PyList_Append(out, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(item);
        pos = vb_end;
    }
    return out;
fallback:
    Py_DECREF(out);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(count_in_subtree_doc,
"count_in_subtree(share, prefix) -> int\n\n"
"walk._count_in_subtree: how many leading (oid, tag, raw) of the list share\n"
"have a tag below 0x80 and an OID starting with prefix; -1 when an item is not\n"
"such a tuple.");

static PyObject *
count_in_subtree(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyList_CheckExact(args[0]) || !PyBytes_CheckExact(args[1]))
        return PyLong_FromLong(-1);
    PyObject *share = args[0];
    const char *prefix = PyBytes_AS_STRING(args[1]);
    Py_ssize_t prefix_size = PyBytes_GET_SIZE(args[1]);
    Py_ssize_t n = PyList_GET_SIZE(share);
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *item = PyList_GET_ITEM(share, k);
        if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 3)
            return PyLong_FromLong(-1);
        PyObject *oid = PyTuple_GET_ITEM(item, 0);
        PyObject *tag = PyTuple_GET_ITEM(item, 1);
        if (!PyBytes_CheckExact(oid) || !PyLong_CheckExact(tag))
            return PyLong_FromLong(-1);
        long tag_value = PyLong_AsLong(tag);
        if (tag_value == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            return PyLong_FromLong(-1);
        }
        if (tag_value >= 0x80 || PyBytes_GET_SIZE(oid) < prefix_size
            || memcmp(PyBytes_AS_STRING(oid), prefix, prefix_size) != 0)
            return PyLong_FromSsize_t(k);
    }
    return PyLong_FromSsize_t(n);
}

/* A VarBind (a slots dataclass) made without running its __init__: the three
 * member slots are written as its generated __init__ would. */
static PyObject *
new_varbind(PyTypeObject *type, PyMemberDef *const members[3], PyObject *oid, PyObject *kind,
            PyObject *value)
{
    PyObject *obj = type->tp_alloc(type, 0);
    if (obj == NULL)
        return NULL;
    if (PyMember_SetOne((char *)obj, members[0], oid) < 0
        || PyMember_SetOne((char *)obj, members[1], kind) < 0
        || PyMember_SetOne((char *)obj, members[2], value) < 0) {
        Py_DECREF(obj);
        return NULL;
    }
    return obj;
}

/* The member definitions of a slots class's fields, by name; 0 if any is not one. */
static int
slot_members(PyTypeObject *type, PyMemberDef *members[3])
{
    static const char *const names[3] = {"oid", "kind", "value"};
    /* A class defined in Python; a built-in type's tp_dict is NULL on 3.12 and later. */
    if (!PyType_HasFeature(type, Py_TPFLAGS_HEAPTYPE) || type->tp_dict == NULL)
        return 0;
    for (int k = 0; k < 3; k++) {
        PyObject *descr = PyDict_GetItemString(type->tp_dict, names[k]);
        if (descr == NULL || !Py_IS_TYPE(descr, &PyMemberDescr_Type))
            return 0;
        members[k] = ((PyMemberDescrObject *)descr)->d_member;
        if (members[k]->type != T_OBJECT_EX)
            return 0;
    }
    return 1;
}

/* An unsigned big-endian value of up to 8 octets (9 with a leading zero). */
static PyObject *
unsigned_value(const unsigned char *raw, Py_ssize_t size)
{
    while (size > 0 && raw[0] == 0) {
        raw++;
        size--;
    }
    if (size > 8)
        return NULL;
    unsigned long long value = 0;
    for (Py_ssize_t k = 0; k < size; k++)
        value = (value << 8) | raw[k];
    return PyLong_FromUnsignedLongLong(value);
}

static PyObject *
signed_value(const unsigned char *raw, Py_ssize_t size)
{
    if (size == 0)
        return PyLong_FromLong(0);
    if (size > 8)
        return NULL;
    long long value = (raw[0] & 0x80) ? -1 : 0;
    for (Py_ssize_t k = 0; k < size; k++)
        value = (long long)(((unsigned long long)value << 8) | raw[k]);
    return PyLong_FromLongLong(value);
}

PyDoc_STRVAR(take_share_doc,
"take_share(share, count, root, cut, previous, table, kinds, out, decode_subids,\n"
"           varbind) -> (previous, taken)\n\n"
"walk._take's loop for one root: the first count (oid, tag, raw) of share\n"
"become varbind(oid, kind, value) appended to out, OIDs from the shared table\n"
"(decode_subids(encoded[cut:]) after root when new). Stops at the first item\n"
"it does not handle (an OID not after previous, a tag that is not INTEGER,\n"
"OCTET STRING or an unsigned one, a value too long): taken < count, and the\n"
"Python loop goes on from there with the previous returned.");

/* The OID of an encoded varbind OID: the shared table's, or decoded and added
 * to it. A new reference; NULL with no error set when decode_subids refused
 * it with a ValueError (the Python loop raises it again, with the context). */
static PyObject *
table_oid(PyObject *table, PyObject *encoded, Py_ssize_t cut, PyObject *root,
          PyObject *decode_subids)
{
    PyObject *oid = PyDict_GetItemWithError(table, encoded);
    if (oid != NULL) {
        Py_INCREF(oid); /* owned: a collection during the allocations below may clear the table */
        return oid;
    }
    if (PyErr_Occurred())
        return NULL;
    PyObject *rest = PyBytes_FromStringAndSize(PyBytes_AS_STRING(encoded) + cut,
                                               PyBytes_GET_SIZE(encoded) - cut);
    if (rest == NULL)
        return NULL;
    PyObject *subids = PyObject_CallOneArg(decode_subids, rest);
    Py_DECREF(rest);
    if (subids == NULL) {
        if (PyErr_ExceptionMatches(PyExc_ValueError))
            PyErr_Clear();
        return NULL;
    }
    oid = PySequence_Concat(root, subids);
    Py_DECREF(subids);
    if (oid != NULL && PyDict_SetItem(table, encoded, oid) < 0)
        Py_CLEAR(oid);
    return oid;
}

/* The value of a varbind of one of the common types, as walk._take makes it;
 * NULL with no error set for any other type or an integer past 64 bits. */
static PyObject *
common_value(long tag, PyObject *raw_obj)
{
    const unsigned char *raw = (const unsigned char *)PyBytes_AS_STRING(raw_obj);
    Py_ssize_t raw_size = PyBytes_GET_SIZE(raw_obj);
    if (tag == 0x41 || tag == 0x42 || tag == 0x43 || tag == 0x46)
        return unsigned_value(raw, raw_size);
    if (tag == TAG_INTEGER)
        return signed_value(raw, raw_size);
    if (tag == TAG_OCTETS) {
        Py_INCREF(raw_obj);
        return raw_obj;
    }
    return NULL;
}

/* One (encoded, tag, raw) of a share into a VarBind appended to out. 1 when
 * taken (*previous is then its OID), 0 when it is the Python loop's, -1 on an
 * error. */
static int
take_one(PyObject *item, Py_ssize_t cut, PyObject *root, PyObject **previous, PyObject *table,
         PyObject *kinds, PyObject *out, PyObject *decode_subids, PyTypeObject *varbind,
         PyMemberDef *const members[3])
{
    if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 3)
        return 0;
    PyObject *encoded = PyTuple_GET_ITEM(item, 0);
    PyObject *tag_obj = PyTuple_GET_ITEM(item, 1);
    PyObject *raw_obj = PyTuple_GET_ITEM(item, 2);
    if (!PyBytes_CheckExact(encoded) || !PyLong_CheckExact(tag_obj)
        || !PyBytes_CheckExact(raw_obj) || PyBytes_GET_SIZE(encoded) < cut)
        return 0;
    PyObject *oid = table_oid(table, encoded, cut, root, decode_subids);
    if (oid == NULL)
        return PyErr_Occurred() ? -1 : 0;
    int taken = -1;
    PyObject *kind = NULL, *value = NULL;
    int after = PyObject_RichCompareBool(oid, *previous, Py_GT);
    if (after <= 0) {
        taken = after; /* not after the previous one: the Python loop says so */
        goto done;
    }
    kind = PyDict_GetItemWithError(kinds, tag_obj);
    if (kind == NULL) {
        taken = PyErr_Occurred() ? -1 : 0;
        goto done;
    }
    Py_INCREF(kind);
    /* A known kind is a small tag: no overflow here. */
    value = common_value(PyLong_AsLong(tag_obj), raw_obj);
    if (value == NULL) {
        taken = PyErr_Occurred() ? -1 : 0;
        goto done;
    }
    PyObject *made = new_varbind(varbind, members, oid, kind, value);
    if (made == NULL)
        goto done;
    int appended = PyList_Append(out, made);
    Py_DECREF(made);
    if (appended < 0)
        goto done;
    Py_INCREF(oid);
    Py_SETREF(*previous, oid);
    taken = 1;
done:
    Py_DECREF(oid);
    Py_XDECREF(kind);
    Py_XDECREF(value);
    return taken;
}

static PyObject *
take_share(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 10) {
        PyErr_SetString(PyExc_TypeError, "take_share takes 10 arguments");
        return NULL;
    }
    PyObject *share = args[0], *root = args[2], *previous = args[4], *table = args[5];
    PyObject *kinds = args[6], *out = args[7], *decode_subids = args[8];
    PyMemberDef *members[3];
    if (!PyLong_CheckExact(args[1]) || !PyLong_CheckExact(args[3]))
        return Py_BuildValue("(On)", previous, (Py_ssize_t)0);
    Py_ssize_t count = PyLong_AsSsize_t(args[1]);
    Py_ssize_t cut = PyLong_AsSsize_t(args[3]);
    if ((count == -1 || cut == -1) && PyErr_Occurred()) {
        PyErr_Clear(); /* past Py_ssize_t: the Python loop's */
        return Py_BuildValue("(On)", previous, (Py_ssize_t)0);
    }
    /* Anything but what walk._take passes: all of it is the Python loop's. */
    if (!PyList_CheckExact(share) || !PyTuple_CheckExact(root) || !PyDict_CheckExact(table)
        || !PyDict_CheckExact(kinds) || !PyList_CheckExact(out) || !PyType_Check(args[9])
        || count < 0 || count > PyList_GET_SIZE(share) || cut < 0
        || !slot_members((PyTypeObject *)args[9], members))
        return Py_BuildValue("(On)", previous, (Py_ssize_t)0);
    PyTypeObject *varbind = (PyTypeObject *)args[9];
    Py_INCREF(previous);
    Py_ssize_t k = 0;
    for (; k < count && k < PyList_GET_SIZE(share); k++) {
        PyObject *item = PyList_GET_ITEM(share, k);
        Py_INCREF(item); /* owned: the list is not ours */
        int taken = take_one(item, cut, root, &previous, table, kinds, out, decode_subids,
                             varbind, members);
        Py_DECREF(item);
        if (taken < 0) {
            Py_DECREF(previous);
            return NULL;
        }
        if (taken == 0)
            break;
    }
    return Py_BuildValue("(Nn)", previous, k);
}

PyDoc_STRVAR(map_plain_doc,
"map_plain(varbinds, cut, known, absent, numeric, wrap_at, counter64, out, varbind)\n"
"    -> int\n\n"
"MetricMapper.families's loop for a plain number metric (no instance, no static\n"
"labels): for each varbind of the list, from the first, skip it if its kind is in\n"
"absent; its row is known[oid[cut:]] (None: no sample); if its kind is in numeric\n"
"and its value an int, append (row, value) to out, the value modulo wrap_at for a\n"
"counter64 kind when wrap_at is not None. Stops at the first varbind whose row\n"
"is not in known yet (or that is not a varbind) and returns its position, for\n"
"the Python loop to go on from; len(varbinds) when it took them all.");

/* One varbind of map_plain: 1 mapped or skipped, 0 the Python loop's, -1 an error. */
static int
map_one(PyObject *item, Py_ssize_t cut, PyObject *known, PyObject *absent, PyObject *numeric,
        PyObject *wrap_at, PyObject *counter64, PyObject *out, PyTypeObject *varbind,
        PyMemberDef *const members[3])
{
    if (!Py_IS_TYPE(item, varbind))
        return 0;
    /* Each slot is read where the Python loop reads it, and owned from then on:
     * Python code run meanwhile (a hash, a finalizer during an allocation) may
     * rebind the slots or change known. */
    PyObject *oid = NULL, *value = NULL, *row = NULL, *sample = NULL;
    PyObject *kind = *(PyObject **)((char *)item + members[1]->offset);
    if (kind == NULL)
        return 0; /* unset: Python's AttributeError */
    Py_INCREF(kind);
    int mapped = -1;
    int skip = PySet_Contains(absent, kind);
    if (skip != 0) {
        mapped = skip; /* 1: no value, no sample; -1: an error */
        goto done;
    }
    mapped = 0;
    oid = *(PyObject **)((char *)item + members[0]->offset);
    if (oid == NULL || !PyTuple_CheckExact(oid)) {
        oid = NULL;
        goto done;
    }
    Py_INCREF(oid);
    mapped = -1;
    PyObject *suffix = PyTuple_GetSlice(oid, cut, PyTuple_GET_SIZE(oid));
    if (suffix == NULL)
        goto done;
    row = PyDict_GetItemWithError(known, suffix);
    Py_DECREF(suffix);
    if (row == NULL) {
        mapped = PyErr_Occurred() ? -1 : 0; /* a row not seen yet: Python works its labels out */
        goto done;
    }
    Py_INCREF(row);
    mapped = 1;
    if (row == Py_None)
        goto done;
    mapped = 0;
    value = *(PyObject **)((char *)item + members[2]->offset);
    if (value == NULL)
        goto done;
    Py_INCREF(value);
    mapped = -1;
    int number = PySet_Contains(numeric, kind);
    if (number < 0)
        goto done;
    mapped = 1;
    if (!number || !PyLong_Check(value))
        goto done;
    mapped = -1;
    if (wrap_at != Py_None && kind == counter64) {
        PyObject *wrapped = PyNumber_Remainder(value, wrap_at);
        if (wrapped == NULL)
            goto done;
        sample = PyTuple_Pack(2, row, wrapped);
        Py_DECREF(wrapped);
    }
    else
        sample = PyTuple_Pack(2, row, value);
    if (sample != NULL && PyList_Append(out, sample) == 0)
        mapped = 1;
done:
    Py_XDECREF(sample);
    Py_XDECREF(row);
    Py_XDECREF(value);
    Py_XDECREF(oid);
    Py_DECREF(kind);
    return mapped;
}

static PyObject *
map_plain(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError, "map_plain takes 9 arguments");
        return NULL;
    }
    PyObject *varbinds = args[0], *known = args[2], *absent = args[3], *numeric = args[4];
    PyObject *wrap_at = args[5], *counter64 = args[6], *out = args[7];
    if (!PyLong_CheckExact(args[1]))
        return PyLong_FromLong(0);
    Py_ssize_t cut = PyLong_AsSsize_t(args[1]);
    if (cut == -1 && PyErr_Occurred()) {
        PyErr_Clear(); /* past Py_ssize_t: the Python loop's */
        return PyLong_FromLong(0);
    }
    PyMemberDef *members[3];
    /* Anything but what MetricMapper.families passes: all of it is the Python loop's. */
    if (!PyList_CheckExact(varbinds) || !PyDict_CheckExact(known) || !PyAnySet_Check(absent)
        || !PyAnySet_Check(numeric) || !PyList_CheckExact(out) || !PyType_Check(args[8])
        || cut < 0 || (wrap_at != Py_None && !PyLong_CheckExact(wrap_at))
        || !slot_members((PyTypeObject *)args[8], members))
        return PyLong_FromLong(0);
    PyTypeObject *varbind = (PyTypeObject *)args[8];
    Py_ssize_t k = 0;
    for (; k < PyList_GET_SIZE(varbinds); k++) {
        PyObject *item = PyList_GET_ITEM(varbinds, k);
        Py_INCREF(item); /* owned: the list is not ours */
        int mapped = map_one(item, cut, known, absent, numeric, wrap_at, counter64, out,
                             varbind, members);
        Py_DECREF(item);
        if (mapped < 0)
            return NULL;
        if (mapped == 0)
            break;
    }
    return PyLong_FromSsize_t(k);
}

PyDoc_STRVAR(render_int_samples_doc,
"render_int_samples(name, texts, samples) -> str | None\n\n"
"exposition.render_text's common family: one 'name{labels} value' line per\n"
"(labels, value) of samples, joined by newlines, where every label set's text\n"
"is texts[id(labels)] and every value an int. None if any is not.");

static PyObject *
render_int_samples(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyUnicode_CheckExact(args[0]) || !PyDict_CheckExact(args[1])
        || !PyList_CheckExact(args[2]))
        Py_RETURN_NONE;
    PyObject *texts = args[1], *samples = args[2];
    Py_ssize_t name_size;
    const char *name = PyUnicode_AsUTF8AndSize(args[0], &name_size);
    if (name == NULL) {
        PyErr_Clear(); /* not UTF-8 (a lone surrogate): Python's own path */
        Py_RETURN_NONE;
    }
    Py_ssize_t n = PyList_GET_SIZE(samples);
    if (n == 0)
        Py_RETURN_NONE; /* render_text leaves such a family out itself */
    size_t capacity = (size_t)n * ((size_t)name_size + 96), used = 0;
    char *buffer = PyMem_Malloc(capacity);
    if (buffer == NULL)
        return PyErr_NoMemory();
    PyObject *sample = NULL, *text = NULL; /* owned in each turn: a lookup may run Python */
    for (Py_ssize_t k = 0; k < n; k++) {
        Py_CLEAR(sample);
        Py_CLEAR(text);
        if (PyList_GET_SIZE(samples) != n)
            goto fallback; /* changed under us: Python's own loop */
        sample = PyList_GET_ITEM(samples, k);
        Py_INCREF(sample);
        if (!PyTuple_CheckExact(sample) || PyTuple_GET_SIZE(sample) != 2
            || !PyLong_CheckExact(PyTuple_GET_ITEM(sample, 1)))
            goto fallback;
        PyObject *key = PyLong_FromVoidPtr(PyTuple_GET_ITEM(sample, 0));
        if (key == NULL)
            goto error;
        text = PyDict_GetItemWithError(texts, key);
        Py_DECREF(key);
        if (text == NULL) {
            if (PyErr_Occurred())
                goto error;
            goto fallback;
        }
        Py_INCREF(text);
        if (!PyUnicode_CheckExact(text))
            goto fallback;
        Py_ssize_t text_size;
        const char *text_utf8 = PyUnicode_AsUTF8AndSize(text, &text_size);
        if (text_utf8 == NULL) {
            PyErr_Clear();
            goto fallback;
        }
        char digits[32];
        int overflow = 0;
        PyObject *value = PyTuple_GET_ITEM(sample, 1);
        long long number = PyLong_AsLongLongAndOverflow(value, &overflow);
        int digits_size;
        if (overflow == 0) {
            if (number == -1 && PyErr_Occurred())
                goto error;
            digits_size = snprintf(digits, sizeof digits, "%lld", number);
        }
        else if (overflow > 0) {
            unsigned long long big = PyLong_AsUnsignedLongLong(value);
            if (big == (unsigned long long)-1 && PyErr_Occurred()) {
                PyErr_Clear();
                goto fallback; /* past 64 bits: Python's str() */
            }
            digits_size = snprintf(digits, sizeof digits, "%llu", big);
        }
        else
            goto fallback;
        size_t need = used + (size_t)name_size + (size_t)text_size + (size_t)digits_size + 2;
        if (need > capacity) {
            capacity = need * 2;
            char *grown = PyMem_Realloc(buffer, capacity);
            if (grown == NULL) {
                PyErr_NoMemory();
                goto error;
            }
            buffer = grown;
        }
        if (k > 0)
            buffer[used++] = '\n';
        memcpy(buffer + used, name, name_size);
        used += name_size;
        memcpy(buffer + used, text_utf8, text_size);
        used += text_size;
        buffer[used++] = ' ';
        memcpy(buffer + used, digits, digits_size);
        used += digits_size;
    }
    Py_CLEAR(sample);
    Py_CLEAR(text);
    PyObject *result = PyUnicode_DecodeUTF8(buffer, (Py_ssize_t)used, "strict");
    PyMem_Free(buffer);
    return result;
fallback:
    Py_XDECREF(sample);
    Py_XDECREF(text);
    PyMem_Free(buffer);
    Py_RETURN_NONE;
error:
    Py_XDECREF(sample);
    Py_XDECREF(text);
    PyMem_Free(buffer);
    return NULL;
}

static PyMethodDef methods[] = {
    {"decode_varbinds", (PyCFunction)(void (*)(void))decode_varbinds, METH_FASTCALL,
     decode_varbinds_doc},
    {"count_in_subtree", (PyCFunction)(void (*)(void))count_in_subtree, METH_FASTCALL,
     count_in_subtree_doc},
    {"take_share", (PyCFunction)(void (*)(void))take_share, METH_FASTCALL, take_share_doc},
    {"map_plain", (PyCFunction)(void (*)(void))map_plain, METH_FASTCALL, map_plain_doc},
    {"render_int_samples", (PyCFunction)(void (*)(void))render_int_samples, METH_FASTCALL,
     render_int_samples_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    "exporter.clients.snmp._speedups",
    "Compiled versions of the SNMP scrape's innermost loops; see the file's header.",
    -1,
    methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModule_Create(&module_def);
}
