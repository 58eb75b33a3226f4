-- Push subscriptions of users removed before removing a user took them
-- along (issue 9): their browsers would go on being notified.
DELETE FROM push_subscriptions
 WHERE user_name != '' AND user_name NOT IN (SELECT name FROM users);
