/*
 * mesh._fastdecode: the consumer's per-record hot path in C.
 *
 * Python's protobuf (upb) parses an EventEnvelope in about 0.5 us, but each field read after
 * that (event_id, event_type, HasField) costs 0.1-0.3 us through the binding, and a
 * dataclass per record another 0.2 us: together more than the whole budget the consumer
 * runner has over a bare aiokafka loop (bench/consumer.py, docs/benchmarks.md).
 *
 * Decoder(parse, parse_framed, id_field, type_field, payloads, accept) is called with one
 * poll's record lists. For each record it first reads, from the value's top-level wire format,
 * the three facts the envelope contract needs: the last event_id is not empty, the last payload
 * field of the oneof is an accepted one, and the last event_type names that payload (the last
 * occurrence of each wins, as when protobuf parses them). The values that pass are framed as
 * the elements of one repeated field and parsed by upb (``parse_framed``) in a single call into
 * a single arena, which costs less than parsing each alone (one call and one arena a record);
 * if that frame does not parse (one bad value spoils it), each value is parsed alone with
 * ``parse``. A record that passes both becomes a Message. Anything else (a value that is not
 * bytes, a rule broken, a parse error, or any wire shape this scan does not settle, such as a
 * known field with an unexpected wire type or a group) comes back as the record itself, for
 * mesh.envelope.decode to judge and explain. So this code can only speed up an acceptance that
 * Python would make too (the property tests hold it to that); it never produces an error of its
 * own. A Message's envelope keeps its poll's arena alive while it lives.
 *
 * Message(record, envelope) is the consumed record with its validated envelope, handed to
 * batch handlers: two read-only slots, identity equality, like the dataclass it replaces.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <structmember.h>

#define MAX_FIELD 64 /* oneof field numbers must be below this (EventEnvelope uses 10-17) */

/* ---------------------------------------------------------------------------------------- */
/* Message                                                                                  */

typedef struct {
    PyObject *message_type;
} ModuleState;

static inline ModuleState *
module_state(PyObject *module)
{
    return (ModuleState *)PyModule_GetState(module);
}

typedef struct {
    PyObject_HEAD
    PyObject *record;
    PyObject *envelope;
} MessageObject;

static PyObject *str_event_id; /* "event_id" */
static PyObject *str_value;    /* "value" */

static PyObject *
message_make(PyTypeObject *type, PyObject *record, PyObject *envelope)
{
    MessageObject *self = (MessageObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->record = Py_NewRef(record);
    self->envelope = Py_NewRef(envelope);
    return (PyObject *)self;
}

static PyObject *
Message_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"record", "envelope", NULL};
    PyObject *record, *envelope;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO:Message", kwlist, &record, &envelope)) {
        return NULL;
    }
    return message_make(type, record, envelope);
}

static int
Message_traverse(MessageObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->record);
    Py_VISIT(self->envelope);
    return 0;
}

static int
Message_clear(MessageObject *self)
{
    Py_CLEAR(self->record);
    Py_CLEAR(self->envelope);
    return 0;
}

static void
Message_dealloc(MessageObject *self)
{
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    Message_clear(self);
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

static PyObject *
Message_repr(MessageObject *self)
{
    return PyUnicode_FromFormat("Message(record=%R, envelope=%R)", self->record, self->envelope);
}

static PyObject *
Message_event_id(MessageObject *self, void *closure)
{
    return PyObject_GetAttr(self->envelope, str_event_id);
}

static PyMemberDef Message_members[] = {
    {"record", T_OBJECT_EX, offsetof(MessageObject, record), READONLY, "the consumed record"},
    {"envelope", T_OBJECT_EX, offsetof(MessageObject, envelope), READONLY,
     "its decoded, validated EventEnvelope"},
    {NULL},
};

static PyGetSetDef Message_getset[] = {
    {"event_id", (getter)Message_event_id, NULL, "the envelope's event id", NULL},
    {NULL},
};

static PyType_Slot Message_slots[] = {
    {Py_tp_doc, "A consumed record with its decoded, validated envelope (read-only)."},
    {Py_tp_new, Message_new},
    {Py_tp_dealloc, Message_dealloc},
    {Py_tp_traverse, Message_traverse},
    {Py_tp_clear, Message_clear},
    {Py_tp_repr, Message_repr},
    {Py_tp_members, Message_members},
    {Py_tp_getset, Message_getset},
    {0, NULL},
};

static PyType_Spec Message_spec = {
    .name = "mesh._fastdecode.Message",
    .basicsize = sizeof(MessageObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = Message_slots,
};

/* ---------------------------------------------------------------------------------------- */
/* The wire scan                                                                            */

typedef struct {
    PyObject_HEAD
    PyObject *parse;
    PyObject *parse_framed;
    PyTypeObject *message_type;
    uint64_t id_field;
    uint64_t type_field;
    char is_payload[MAX_FIELD];     /* a field of the payload oneof */
    PyObject *expected[MAX_FIELD];  /* accepted payload field -> its event_type (bytes) */
} DecoderObject;

static int
read_varint(const uint8_t **p, const uint8_t *end, uint64_t *out)
{
    uint64_t value = 0;
    for (int shift = 0; shift < 64 && *p < end; shift += 7) {
        uint8_t byte = *(*p)++;
        value |= (uint64_t)(byte & 0x7f) << shift;
        if (!(byte & 0x80)) {
            *out = value;
            return 1;
        }
    }
    return 0;
}

/* The accepted payload field number of a valid envelope, or 0: not settled here. */
static uint64_t
scan(const DecoderObject *d, const uint8_t *p, const uint8_t *end)
{
    int64_t id_len = -1;
    const uint8_t *type_ptr = NULL;
    uint64_t type_len = 0, payload = 0;
    while (p < end) {
        uint64_t tag, n;
        if (!read_varint(&p, end, &tag)) {
            return 0;
        }
        uint64_t field = tag >> 3;
        int known = field == d->id_field || field == d->type_field ||
                    (field < MAX_FIELD && d->is_payload[field]);
        if (field == 0) {
            return 0;
        }
        switch (tag & 7) {
        case 0: /* varint */
            if (known || !read_varint(&p, end, &n)) {
                return 0;
            }
            break;
        case 1: /* fixed64 */
            if (known || end - p < 8) {
                return 0;
            }
            p += 8;
            break;
        case 5: /* fixed32 */
            if (known || end - p < 4) {
                return 0;
            }
            p += 4;
            break;
        case 2: /* length-delimited */
            if (!read_varint(&p, end, &n) || n > (uint64_t)(end - p)) {
                return 0;
            }
            if (field == d->id_field) {
                id_len = (int64_t)n;
            }
            else if (field == d->type_field) {
                type_ptr = p;
                type_len = n;
            }
            else if (known) {
                payload = field; /* the last oneof member on the wire is the one set */
            }
            p += n;
            break;
        default: /* groups and invalid wire types */
            return 0;
        }
    }
    if (id_len <= 0 || payload == 0 || type_ptr == NULL) {
        return 0;
    }
    PyObject *expected = d->expected[payload];
    if (expected == NULL || (Py_ssize_t)type_len != PyBytes_GET_SIZE(expected) ||
        memcmp(type_ptr, PyBytes_AS_STRING(expected), type_len) != 0) {
        return 0;
    }
    return payload;
}

/* Every record of a poll, in order, as a new list. */
static PyObject *
flatten(PyObject *batches)
{
    PyObject *outer = PyObject_GetIter(batches);
    if (outer == NULL) {
        return NULL;
    }
    PyObject *records = PyList_New(0);
    PyObject *batch;
    while (records != NULL && (batch = PyIter_Next(outer)) != NULL) {
        PyObject *part = PySequence_Fast(batch, "a poll's records must be a sequence");
        Py_DECREF(batch);
        if (part == NULL) {
            Py_CLEAR(records);
            break;
        }
        if (PyList_SetSlice(records, PyList_GET_SIZE(records), PyList_GET_SIZE(records), part) < 0) {
            Py_CLEAR(records);
        }
        Py_DECREF(part);
    }
    Py_DECREF(outer);
    if (records != NULL && PyErr_Occurred()) {
        Py_CLEAR(records);
    }
    return records;
}

static Py_ssize_t
varint_size(Py_ssize_t n)
{
    Py_ssize_t size = 1;
    for (size_t v = (size_t)n; v >= 0x80; v >>= 7) {
        size++;
    }
    return size;
}

/*
 * The values of ``n`` records framed as the elements of a repeated field 1 (``0x0A``, length,
 * bytes, ...), parsed by ``parse_framed`` in one call into one upb arena: a list of ``settled``
 * envelopes. NULL without an exception set: it did not parse (one bad value spoils the frame),
 * and the caller parses the values one at a time.
 */
static PyObject *
parse_framed(DecoderObject *d, PyObject **values, Py_ssize_t n, Py_ssize_t settled,
             Py_ssize_t total)
{
    PyObject *frame = PyBytes_FromStringAndSize(NULL, total);
    if (frame == NULL) {
        return NULL;
    }
    uint8_t *p = (uint8_t *)PyBytes_AS_STRING(frame);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (values[i] == NULL) {
            continue;
        }
        Py_ssize_t size = PyBytes_GET_SIZE(values[i]);
        *p++ = 0x0A; /* field 1, length-delimited */
        for (size_t v = (size_t)size; ; v >>= 7) {
            if (v < 0x80) {
                *p++ = (uint8_t)v;
                break;
            }
            *p++ = (uint8_t)(v | 0x80);
        }
        memcpy(p, PyBytes_AS_STRING(values[i]), size);
        p += size;
    }
    PyObject *parsed = PyObject_CallOneArg(d->parse_framed, frame);
    Py_DECREF(frame);
    PyObject *envelopes = NULL;
    if (parsed != NULL) {
        envelopes = PySequence_List(parsed);
        Py_DECREF(parsed);
    }
    if (envelopes == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_Exception)) {
            return NULL;
        }
        PyErr_Clear();
        return NULL;
    }
    if (PyList_GET_SIZE(envelopes) != settled) { /* not expected; the slow path is exact */
        Py_DECREF(envelopes);
        return NULL;
    }
    return envelopes;
}

/* Fill ``out`` for the scanned records: a Message each, or the record when it does not parse. */
static int
settle(DecoderObject *d, PyObject *records, PyObject **values, PyObject *out, Py_ssize_t settled,
       Py_ssize_t total, Py_ssize_t *unsettled)
{
    Py_ssize_t n = PyList_GET_SIZE(records);
    PyObject *envelopes = settled ? parse_framed(d, values, n, settled, total) : NULL;
    if (envelopes == NULL && PyErr_Occurred()) {
        return -1;
    }
    Py_ssize_t next = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (values[i] == NULL) {
            continue;
        }
        PyObject *record = PyList_GET_ITEM(records, i);
        PyObject *envelope;
        if (envelopes != NULL) {
            envelope = Py_NewRef(PyList_GET_ITEM(envelopes, next++));
        }
        else {
            envelope = PyObject_CallOneArg(d->parse, values[i]);
            if (envelope == NULL) {
                if (!PyErr_ExceptionMatches(PyExc_Exception)) {
                    return -1;
                }
                PyErr_Clear(); /* decode() parses it again and says why */
                PyList_SET_ITEM(out, i, Py_NewRef(record));
                ++*unsettled;
                continue;
            }
        }
        PyObject *message = message_make(d->message_type, record, envelope);
        Py_DECREF(envelope);
        if (message == NULL) {
            Py_XDECREF(envelopes);
            return -1;
        }
        PyList_SET_ITEM(out, i, message);
    }
    Py_XDECREF(envelopes);
    return 0;
}

static PyObject *
Decoder_call(DecoderObject *d, PyObject *args, PyObject *kwds)
{
    PyObject *batches;
    if (!PyArg_ParseTuple(args, "O:Decoder", &batches)) {
        return NULL;
    }
    PyObject *records = flatten(batches);
    if (records == NULL) {
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(records);
    PyObject *out = PyList_New(n); /* items NULL until set; a list frees those fine */
    PyObject **values = PyMem_Calloc(n ? n : 1, sizeof(PyObject *));
    Py_ssize_t settled = 0, total = 0, unsettled = 0;
    int failed = out == NULL || values == NULL;
    if (values == NULL) {
        PyErr_NoMemory();
    }
    /* The wire scan first: only what it settles is parsed here. */
    for (Py_ssize_t i = 0; i < n && !failed; i++) {
        PyObject *record = PyList_GET_ITEM(records, i);
        PyObject *value = PyObject_GetAttr(record, str_value);
        if (value == NULL) {
            failed = 1;
            break;
        }
        if (PyBytes_CheckExact(value) && PyBytes_GET_SIZE(value) > 0) {
            const uint8_t *data = (const uint8_t *)PyBytes_AS_STRING(value);
            if (scan(d, data, data + PyBytes_GET_SIZE(value))) {
                Py_ssize_t size = PyBytes_GET_SIZE(value);
                values[i] = value;
                settled++;
                total += 1 + varint_size(size) + size;
                continue;
            }
        }
        Py_DECREF(value);
        PyList_SET_ITEM(out, i, Py_NewRef(record));
        unsettled++;
    }
    if (!failed && settle(d, records, values, out, settled, total, &unsettled) < 0) {
        failed = 1;
    }
    if (values != NULL) {
        for (Py_ssize_t i = 0; i < n; i++) {
            Py_XDECREF(values[i]);
        }
        PyMem_Free(values);
    }
    Py_DECREF(records);
    if (failed) {
        Py_XDECREF(out);
        return NULL;
    }
    return Py_BuildValue("(Nn)", out, unsettled);
}

static int
field_number(PyObject *obj, uint64_t *out)
{
    unsigned long long value = PyLong_AsUnsignedLongLong(obj);
    if (value == (unsigned long long)-1 && PyErr_Occurred()) {
        return 0;
    }
    if (value == 0 || value >= MAX_FIELD) {
        PyErr_Format(PyExc_ValueError, "field number %llu is not in 1..%d", value, MAX_FIELD - 1);
        return 0;
    }
    *out = value;
    return 1;
}

static PyObject *
Decoder_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"parse",    "parse_framed", "id_field", "type_field",
                             "payloads", "accept",       NULL};
    PyObject *parse, *framed, *id_obj, *type_obj, *payloads, *accept;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOO!O:Decoder", kwlist, &parse, &framed,
                                     &id_obj, &type_obj, &PyDict_Type, &payloads, &accept)) {
        return NULL;
    }
    if (!PyCallable_Check(parse) || !PyCallable_Check(framed)) {
        PyErr_SetString(PyExc_TypeError, "parse and parse_framed must be callable");
        return NULL;
    }
    PyObject *module = PyType_GetModule(type);
    if (module == NULL) {
        return NULL;
    }
    DecoderObject *d = (DecoderObject *)type->tp_alloc(type, 0);
    if (d == NULL) {
        return NULL;
    }
    d->parse = Py_NewRef(parse);
    d->parse_framed = Py_NewRef(framed);
    d->message_type = (PyTypeObject *)Py_NewRef(module_state(module)->message_type);
    if (!field_number(id_obj, &d->id_field) || !field_number(type_obj, &d->type_field)) {
        Py_DECREF(d);
        return NULL;
    }
    PyObject *key, *name;
    Py_ssize_t pos = 0;
    while (PyDict_Next(payloads, &pos, &key, &name)) {
        uint64_t field;
        if (!field_number(key, &field)) {
            Py_DECREF(d);
            return NULL;
        }
        if (!PyBytes_Check(name)) {
            PyErr_SetString(PyExc_TypeError, "payloads maps field numbers to event_type bytes");
            Py_DECREF(d);
            return NULL;
        }
        d->is_payload[field] = 1;
        int accepted = 1;
        if (accept != Py_None) {
            accepted = PySequence_Contains(accept, key);
            if (accepted < 0) {
                Py_DECREF(d);
                return NULL;
            }
        }
        if (accepted) {
            Py_XSETREF(d->expected[field], Py_NewRef(name));
        }
    }
    return (PyObject *)d;
}

static int
Decoder_traverse(DecoderObject *d, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(d));
    Py_VISIT(d->parse);
    Py_VISIT(d->parse_framed);
    Py_VISIT(d->message_type);
    return 0;
}

static int
Decoder_clear(DecoderObject *d)
{
    Py_CLEAR(d->parse);
    Py_CLEAR(d->parse_framed);
    Py_CLEAR(d->message_type);
    for (int i = 0; i < MAX_FIELD; i++) {
        Py_CLEAR(d->expected[i]);
    }
    return 0;
}

static void
Decoder_dealloc(DecoderObject *d)
{
    PyTypeObject *type = Py_TYPE(d);
    PyObject_GC_UnTrack(d);
    Decoder_clear(d);
    type->tp_free((PyObject *)d);
    Py_DECREF(type);
}

static PyType_Slot Decoder_slots[] = {
    {Py_tp_doc,
     "Decoder(parse, parse_framed, id_field, type_field, payloads, accept)(batches)\n"
     "    -> (items, unsettled)\n\n"
     "items holds, in order, a Message for each record settled as valid here and the record\n"
     "itself for every other one (unsettled of them), for mesh.envelope.decode to judge."},
    {Py_tp_new, Decoder_new},
    {Py_tp_call, Decoder_call},
    {Py_tp_dealloc, Decoder_dealloc},
    {Py_tp_traverse, Decoder_traverse},
    {Py_tp_clear, Decoder_clear},
    {0, NULL},
};

static PyType_Spec Decoder_spec = {
    .name = "mesh._fastdecode.Decoder",
    .basicsize = sizeof(DecoderObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = Decoder_slots,
};

/* ---------------------------------------------------------------------------------------- */

static int
fastdecode_exec(PyObject *module)
{
    if (str_event_id == NULL) {
        str_event_id = PyUnicode_InternFromString("event_id");
        str_value = PyUnicode_InternFromString("value");
        if (str_event_id == NULL || str_value == NULL) {
            return -1;
        }
    }
    ModuleState *state = module_state(module);
    state->message_type = PyType_FromModuleAndSpec(module, &Message_spec, NULL);
    if (state->message_type == NULL ||
        PyModule_AddObjectRef(module, "Message", state->message_type) < 0) {
        return -1;
    }
    PyObject *decoder_type = PyType_FromModuleAndSpec(module, &Decoder_spec, NULL);
    if (decoder_type == NULL) {
        return -1;
    }
    int added = PyModule_AddObjectRef(module, "Decoder", decoder_type);
    Py_DECREF(decoder_type);
    return added;
}

static int
fastdecode_traverse(PyObject *module, visitproc visit, void *arg)
{
    Py_VISIT(module_state(module)->message_type);
    return 0;
}

static int
fastdecode_clear(PyObject *module)
{
    Py_CLEAR(module_state(module)->message_type);
    return 0;
}

static void
fastdecode_free(void *module)
{
    fastdecode_clear((PyObject *)module);
}

static PyModuleDef_Slot fastdecode_slots[] = {
    {Py_mod_exec, fastdecode_exec},
    {0, NULL},
};

static struct PyModuleDef fastdecode_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "mesh._fastdecode",
    .m_doc = "The consumer's per-record hot path: parse, check and wrap records in C.",
    .m_size = sizeof(ModuleState),
    .m_slots = fastdecode_slots,
    .m_traverse = fastdecode_traverse,
    .m_clear = fastdecode_clear,
    .m_free = fastdecode_free,
};

PyMODINIT_FUNC
PyInit__fastdecode(void)
{
    return PyModuleDef_Init(&fastdecode_module);
}
