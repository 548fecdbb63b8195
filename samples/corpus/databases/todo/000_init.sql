-- NodeJSDemo's pattern: a package database that `#{x.todo}` names in container.json.
create table todo (id serial primary key, title text not null, done boolean default false);
