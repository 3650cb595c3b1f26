CREATE TABLE authors (id serial PRIMARY KEY, name text NOT NULL, email text UNIQUE, age int);
CREATE TABLE posts (
    id serial PRIMARY KEY,
    title text NOT NULL,
    body text,
    author_id int REFERENCES authors (id),
    editor_id int REFERENCES authors (id),
    rating numeric,
    tags text[] DEFAULT '{}',
    meta jsonb,
    published boolean DEFAULT false,
    during int4range,
    search tsvector GENERATED ALWAYS AS (to_tsvector('english', title || ' ' || coalesce(body, ''))) STORED
);
CREATE TABLE labels (id serial PRIMARY KEY, name text UNIQUE NOT NULL);
CREATE TABLE post_labels (
    post_id int REFERENCES posts (id) ON DELETE CASCADE,
    label_id int REFERENCES labels (id),
    PRIMARY KEY (post_id, label_id)
);
CREATE TABLE profiles (author_id int PRIMARY KEY REFERENCES authors (id), bio text);
CREATE TABLE comments (id serial PRIMARY KEY, post_id int NOT NULL REFERENCES posts (id) ON DELETE CASCADE, body text);
CREATE VIEW published_posts AS SELECT id, title, author_id FROM posts WHERE published;
GRANT SELECT ON published_posts TO project_admin;
CREATE TABLE "odd table" ("weird ""col""" text, id int PRIMARY KEY);

INSERT INTO authors (name, email, age) VALUES
    ('Ada', 'ada@example.com', 36), ('Brian', 'brian@example.com', 51), ('Cleo', NULL, NULL);
INSERT INTO posts (title, body, author_id, editor_id, rating, tags, meta, published, during) VALUES
    ('Hello world', 'first post about cats', 1, 2, 4.5, '{intro,cats}', '{"lang": "en", "views": 10, "nested": {"a": [1, 2]}}', true, '[1,5)'),
    ('Second thoughts', 'dogs are great, too', 1, NULL, 3.0, '{dogs}', '{"lang": "fr", "views": 3}', true, '[5,9)'),
    ('Draft, with comma', NULL, 2, 1, NULL, '{}', NULL, false, NULL),
    ('Zebra "quoted"', 'the fat cats sat', 3, NULL, 5, '{cats,zebra}', '{"lang": "en", "views": 99}', true, '[20,30)');
INSERT INTO labels (name) VALUES ('news'), ('pets'), ('misc');
INSERT INTO post_labels VALUES (1, 1), (1, 2), (2, 2), (4, 2);
INSERT INTO profiles VALUES (1, 'Mathematician'), (2, 'Writer');
INSERT INTO comments (post_id, body) VALUES (1, 'nice'), (1, 'great'), (2, 'meh');
INSERT INTO "odd table" VALUES ('x', 1);

CREATE FUNCTION add_numbers(a int, b int DEFAULT 1) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT a + b';
CREATE FUNCTION posts_by(author int) RETURNS SETOF posts LANGUAGE sql STABLE AS
    'SELECT * FROM posts WHERE author_id = author ORDER BY id';
CREATE FUNCTION first_post() RETURNS posts LANGUAGE sql STABLE AS 'SELECT * FROM posts ORDER BY id LIMIT 1';
CREATE FUNCTION post_titles() RETURNS SETOF text LANGUAGE sql STABLE AS 'SELECT title FROM posts ORDER BY id';
CREATE FUNCTION echo_json(jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS 'SELECT $1';
CREATE FUNCTION touch_labels() RETURNS void LANGUAGE sql VOLATILE AS 'UPDATE labels SET name = name';
CREATE FUNCTION fail_with(code text) RETURNS void LANGUAGE plpgsql AS
    $$ BEGIN RAISE EXCEPTION 'custom failure' USING ERRCODE = code, HINT = 'a hint'; END $$;
